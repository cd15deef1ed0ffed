"""Issue 19 #9, the figures: user series never look like a shipped mechanism; tick labels readable (not tiny, not
rotated when they fit, never on top of each other or of the next panel); memory in MiB, as in the tables."""
from __future__ import annotations

import copy

import matplotlib.pyplot as plt
import pytest

from attnbench.report import figures as F
from attnbench.report import load_runs
from attnbench.report.derive import add_derived
from attnbench.report.style import FIXED, series_styles

from report_fixtures import power_law_rows, synthetic_manifest, write_run

#: marker shapes that read alike at 5 px
FAMILIES = [{"o", "h", "H", "p", "8", "."}, {"s"}, {"D", "d"}, {"^", "v", "<", ">"}]


def _lab(hex_colour: str) -> tuple[float, float, float]:
    """sRGB hex -> CIE 1976 L*a*b* (D65), written out so the test does not share the code it checks."""
    rgb = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    x = (0.4124 * lin[0] + 0.3576 * lin[1] + 0.1805 * lin[2]) / 0.95047
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    z = (0.0193 * lin[0] + 0.1192 * lin[1] + 0.9505 * lin[2]) / 1.08883
    f = [t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _delta_e(a: str, b: str) -> float:
    return sum((p - q) ** 2 for p, q in zip(_lab(a), _lab(b))) ** 0.5


def test_lab_conversion_known_values():
    assert _lab("#ffffff") == pytest.approx((100, 0, 0), abs=0.1)
    assert _lab("#ff0000") == pytest.approx((53.24, 80.09, 67.20), abs=0.1)


def test_user_series_look_unlike_every_shipped_mechanism():
    """The issue's case: a user attention got dark indigo with a hexagon beside mhsa's blue circle."""
    users = [f"user-{i}" for i in range(72)] + ["mine.attn:Linear", "dbra-topk8"]
    styles = series_styles(users + list(FIXED))
    for name in users:
        st = styles[name]
        for fixed in FIXED.values():
            assert _delta_e(st.color, fixed.color) >= 40, (name, st, fixed)
            assert not any(st.marker in fam and fixed.marker in fam for fam in FAMILIES), (name, st, fixed)
    assert _delta_e("#393b79", FIXED["mhsa"].color) < 40  # the indigo of the issue would fail this rule


def _frame(sizes=(8, 16, 32, 64), passes_and_batches=()):
    rows = []
    for r in power_law_rows(sizes=sizes):
        rows.append(r)
        for pass_, batch in passes_and_batches:
            q = copy.deepcopy(r)
            q.update({"pass": pass_, "batch": batch, "cell_id": f"{r['cell_id']}-{pass_}-{batch}"})
            rows.append(q)
    return rows


@pytest.fixture
def look_and_rows(tmp_path):
    def make(**kw):
        rows = _frame(**kw)
        frame = add_derived(load_runs([write_run(tmp_path / f"run{len(kw)}", rows, synthetic_manifest(rows))]))
        ok = F._plain(frame[frame["status"] == "ok"])
        return F._look(series_styles(ok["series"]), ok, ok.iloc[:0]), ok
    return make


def _drawn(fig):
    F._fit_tick_labels(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _visible(labels):
    return [t for t in labels if t.get_visible() and t.get_text()]


def test_token_ticks_are_readable_and_never_overlap(look_and_rows):
    look, rows = look_and_rows()
    fig = F._latency_vs_tokens(rows, look)[0]
    renderer = _drawn(fig)
    ax = fig.axes[0]
    labels = _visible(ax.get_xticklabels())
    assert [t.get_text() for t in labels] == ["8×8", "16×16", "32×32", "64×64"]
    assert all(t.get_rotation() == 0 and t.get_fontsize() >= 8 for t in labels)  # they fit: upright, not tiny
    plt.close(fig)
    look, rows = look_and_rows(sizes=(8, 16, 32, 64, 96, 128, 192, 224))  # 192 and 224 are close on a log axis
    fig = F._latency_vs_tokens(rows, look)[0]
    renderer = _drawn(fig)
    boxes = [t.get_window_extent(renderer) for t in _visible(fig.axes[0].get_xticklabels())]
    assert len(boxes) >= 6 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_y_tick_labels_stay_out_of_the_neighbouring_panel(look_and_rows):
    """Issue 19 #9: the right column's y labels ran into the left panel (two passes side by side)."""
    look, rows = look_and_rows(passes_and_batches=[("forward_backward", 1), ("forward", 8), ("forward_backward", 8)])
    fig = F._latency_vs_tokens(rows, look)[0]
    renderer = _drawn(fig)
    axes = fig.axes
    for right in axes:
        for left in axes:
            lb, rb = left.get_window_extent(renderer), right.get_window_extent(renderer)
            if left is right or not (lb.x1 <= rb.x0 and lb.y0 < rb.y1 and rb.y0 < lb.y1):
                continue  # only panels side by side
            for t in _visible(right.get_yticklabels()):
                box = t.get_window_extent(renderer)
                if rb.y0 <= (box.y0 + box.y1) / 2 <= rb.y1:  # a label of the panel's visible range
                    assert box.x0 > lb.x1 + 2, (t.get_text(), box, lb)
    plt.close(fig)


def test_memory_figure_is_in_mib_as_the_tables(look_and_rows):
    look, rows = look_and_rows()
    drawn = F._memory_vs_tokens(rows, look)
    fig, description = drawn[0], drawn[2]
    _drawn(fig)
    texts = [t.get_text() for ax in fig.axes for t in _visible(ax.get_yticklabels())]
    assert texts and all(t.endswith(" MiB") for t in texts), texts
    assert "MB" not in description and "MiB" in description
    ys = fig.axes[0].lines[0].get_ydata()
    assert max(ys) < 1e5  # plotted in MiB, not bytes
    plt.close(fig)
