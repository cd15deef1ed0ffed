"""Does the latency metric's pairing need its re-warm call, and its re-timing of the baseline? (docs/metrics.md,
"Cheaper pairing: what the measurement showed").

Per cell: 8 epochs of 10 interleaved rounds (the cell, then mhsa at the same shape), fresh modules each epoch,
alternating epochs with and without the re-warm call before each sample; rounds with a preempted sample dropped.
Prints, per cell, the call times, the ratio with and without the re-warm (geometric mean of the epoch medians), the
epoch-to-epoch spread of the paired ratio, and the spread of an *unpaired* ratio (the cell's epoch median over
mhsa's median of another epoch), which is what reusing one baseline timing per shape would give.

    python3 scripts/pairing_check.py            # about 2-3 minutes on a 2-core CPU
"""
from __future__ import annotations

import math
import statistics as st

import torch

import attentions
from attnbench.core import uncertainty
from attnbench.metrics._passes import Step
from attnbench.metrics.latency import _Contender, _cpu_timer

CELLS = [("dbra", 14, 1, "forward"), ("bra", 28, 1, "forward"), ("agent", 28, 8, "forward"),
         ("dat", 28, 8, "forward"), ("bra", 56, 1, "forward_backward"), ("dbra", 56, 1, "forward")]
EPOCHS, ROUNDS = 8, 10


def builder(name: str, res: int, batch: int, pass_: str):
    def build() -> Step:
        torch.manual_seed(0)
        config = {"dim": 64, "num_heads": 2, **({"auto_pad": True} if name in ("bra", "dbra") else {})}
        module = attentions.build(name, **config)
        torch.manual_seed(1)
        x = torch.randn(batch, res, res, 64, requires_grad=pass_ == "forward_backward")
        return Step(module, module, x, pass_)
    return build


def measure(cell):
    """[(epoch, rewarm?, cell seconds, mhsa seconds)] of the clean rounds, and the two call times (ms)."""
    rounds = []
    for epoch in range(EPOCHS):
        rewarm = epoch % 2 == 0
        a = _Contender(builder(*cell), _cpu_timer, 0.005, 1e9 if rewarm else 0.0)
        b = _Contender(builder("mhsa", *cell[1:]), _cpu_timer, 0.005, 1e9 if rewarm else 0.0)
        a.warm(2)
        b.warm(2)
        for _ in range(ROUNDS):
            a.rewarm()
            wa, ca, _ = a.sample()
            b.rewarm()
            wb, cb, _ = b.sample()
            if not (uncertainty.preempted(wa, ca) or uncertainty.preempted(wb, cb)):
                rounds.append((epoch, rewarm, wa, wb))
    return rounds, (a.call_s * 1e3, b.call_s * 1e3)


def main() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    print(f"{'cell':32s} {'ms':>13s} {'ratio R':>8s} {'ratio N':>8s} {'N/R':>6s} {'sd paired':>9s} {'sd unpaired':>11s}")
    for cell in CELLS:
        rounds, (ms_a, ms_b) = measure(cell)
        epochs = {}
        for epoch, rewarm, a, b in rounds:
            epochs.setdefault(epoch, (rewarm, []))[1].append((a, b))
        summary = {e: (rw, st.median(a / b for a, b in r), st.median(a for a, _ in r), st.median(b for _, b in r))
                   for e, (rw, r) in epochs.items()}

        def gmean(xs):
            return math.exp(st.mean(math.log(x) for x in xs))

        def sd(xs):
            return 100 * st.stdev(math.log(x) for x in xs) if len(xs) > 1 else float("nan")

        with_r = [v[1] for v in summary.values() if v[0]]
        without = [v[1] for v in summary.values() if not v[0]]
        unpaired = [summary[i][2] / summary[j][3] for i in summary for j in summary
                    if i != j and summary[i][0] == summary[j][0]]
        print(f"{' '.join(map(str, cell)):32s} {ms_a:6.1f}/{ms_b:6.1f} {gmean(with_r):8.3f} {gmean(without):8.3f} "
              f"{gmean(without) / gmean(with_r):6.2f} {sd(with_r):8.1f}% {sd(unpaired):10.1f}%")


if __name__ == "__main__":
    main()
