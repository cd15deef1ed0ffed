"""Accuracy runs written by hand: attentions scored image by image on one validation set, for the report tests."""
from __future__ import annotations

import numpy as np

from attnbench.core.correct_bits import encode_bits
from attnbench.core.stats import proportion_interval
from report_fixtures import cell_id, make_row, manifest, write_run

#: cost of each attention's whole model (latency ms, MACs): all different, so a Pareto front has something to say
COSTS = {"mhsa": (10.0, 4.0e8), "bra": (12.0, 3.0e8), "dat": (11.0, 3.5e8), "agent": (9.0, 3.2e8),
         "dbra": (13.0, 2.5e8)}


def correct_bits(top1: dict[str, float], n: int = 1000, seed: int = 0, agreement: float = 3.0) -> dict:
    """label -> n bools with exactly round(top1 · n / 100) right, correlated the way classifiers are: image i is
    right for attention j when ``difficulty_i · agreement + noise_ij`` ranks among its k easiest."""
    rng = np.random.default_rng(seed)
    difficulty = rng.random(n) * agreement
    out = {}
    for label, acc in top1.items():
        score = difficulty + rng.random(n)
        k = int(round(acc * n / 100))
        right = np.zeros(n, dtype=bool)
        right[np.argsort(score)[:k]] = True
        out[label] = right
    return out


def acc_row(label: str, bits: np.ndarray | None, top1: float | None = None, seed: int | None = None,
            run_id: str = "acc-run") -> dict:
    """One ok row of an accuracy suite (attention-level columns of the standard fixture, plus the acc_* ones)."""
    row = make_row("mhsa", 8, "forward", run_id=run_id, suite="acc")
    row.update(attention=label, label=label)
    if seed is not None:
        row["seed"] = seed
    row["cell_id"] = cell_id(row) + ("" if seed is None else f"-{seed}")
    n = None if bits is None else len(bits)
    top1 = 100 * float(bits.mean()) if top1 is None else top1
    latency, macs = COSTS[label]
    row.update(acc_top1=top1, acc_top5=99.0, acc_epochs=5, acc_model=f"swap:tiny:{label}", acc_dataset="fake@32",
               acc_params=1_000_000, acc_train_loss_final=0.5, acc_train_throughput_img_s=100.0,
               acc_loss_curve=[1.0, 0.5], acc_top1_curve=[50.0, top1], model_latency_ms_median=latency,
               model_macs_fvcore=int(macs), acc_seed=0 if seed is None else seed)
    if bits is not None:
        lo, hi = proportion_interval(int(bits.sum()), n)
        row.update(acc_val_n=n, acc_top1_ci_low=100 * lo, acc_top1_ci_high=100 * hi,
                   acc_top1_correct=encode_bits(bits))
    return row


def write_acc_run(path, rows: list[dict]):
    m = manifest("acc")
    m["suite"]["metrics"] = ["params", "flops", "latency", "accuracy"]
    return write_run(path, rows, m)
