"""Shared pieces of the accuracy tests."""
from __future__ import annotations

#: a recipe that trains the tiny models in well under a second per epoch
FAST_RECIPE = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "lr_base_batch": 0, "warmup_epochs": 0.0,
               "mixup": 0.0, "cutmix": 0.0, "randaugment": None, "reprob": 0.0, "augment": "none",
               "num_workers": 0}
