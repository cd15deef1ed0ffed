"""Accuracy sweeps: ImageNet-layout subsets (or a synthetic dataset), one backbone with the attention swapped,
one recipe, one seed and data order for every attention.

* :mod:`.data`: :class:`~.data.ImageFolderSubset` (class subset, per-class cap, resolution) and the transforms.
* :mod:`.synthetic`: a generated ImageFolder whose classes need spatial reasoning (tests, the CPU smoke suite).
* :mod:`.recipe`: the DeiT-style recipe from timm's optimizer, scheduler, mixup and losses.
* :mod:`.train`: the training loop, per-epoch checkpoints, resume, DDP.
* :mod:`.job`: one job = model + data + recipe + work folder (what the ``accuracy`` metric runs).

Command line (also the torchrun entry point): ``python -m attnbench.accuracy train --help``.
"""
from .data import DataError, ImageFolderSubset, build_transform, read_class_list, resolve_data_root
from .recipe import PAPER_RECIPE, Recipe

__all__ = ["DataError", "ImageFolderSubset", "build_transform", "read_class_list", "resolve_data_root", "Recipe",
           "PAPER_RECIPE"]
