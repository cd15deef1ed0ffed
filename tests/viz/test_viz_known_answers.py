"""Drawings on hand-made inputs whose answer is known: forced routing, zero offsets."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import attentions  # noqa: E402
from attnbench.viz.draw import draw_routing, draw_sampling  # noqa: E402

SIZE = 64  # image side in pixels; the token grids below are 16×16, so a token is 4×4 pixels
PIXELS = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)


def _forced_bra():
    """BRA with q = k = v = x (identity projections): region affinities are dot products of region means."""
    m = attentions.build("bra", dim=8, num_heads=1, n_win=4, topk=1, lce_kernel=0).eval()
    with torch.no_grad():
        m.qkv.qkv.weight.copy_(torch.cat([torch.eye(8)] * 3))
        m.qkv.qkv.bias.zero_()
    return m


def test_forced_routing_is_recorded_and_drawn(tmp_path):
    m = _forced_bra()
    x = 0.01 * torch.randn(1, 16, 16, 8, generator=torch.Generator().manual_seed(0))
    # query (0.3, 0.6) -> token (4, 9) -> region (1, 2) = 6; region (3, 1) = 13 holds the query's pattern, doubled,
    # so its affinity 2|u|²·scale beats the query region's own |u|²·scale and every other region's ~0
    u = torch.ones(8)
    x[0, 4:8, 8:12] = u
    x[0, 12:16, 4:8] = 2 * u
    with torch.no_grad(), attentions.inspect(m, query=(0.3, 0.6)) as rec:
        m(x)
    r = rec.records[0]
    assert r.query_pixel == (4, 9) and r.data["query_region"] == 6
    assert r.data["routing_index"][0, 6].tolist() == [13]
    # the query attends only inside the routed region
    qmap = r.data["query_map"][0, 0]
    assert qmap[12:16, 4:8].sum() == pytest.approx(1.0, abs=1e-6) and qmap.sum() == pytest.approx(1.0, abs=1e-6)

    fig, ax = plt.subplots()
    boxes = draw_routing(ax, PIXELS, r)
    assert [(b.region, b.rank) for b in boxes] == [(6, -1), (13, 0)]
    assert (boxes[0].top, boxes[0].left, boxes[0].height, boxes[0].width) == (16, 32, 16, 16)
    assert (boxes[1].top, boxes[1].left, boxes[1].height, boxes[1].width) == (48, 16, 16, 16)
    drawn = sorted((p.get_xy(), p.get_width(), p.get_height(), p.get_fill()) for p in ax.patches
                   if isinstance(p, Rectangle))
    assert drawn == [((16, 48), 16, 16, True), ((32, 16), 16, 16, False)]  # (x, y) = (left, top)
    fig.savefig(tmp_path / "routing.png")
    plt.close(fig)
    assert (tmp_path / "routing.png").stat().st_size > 0


def _zero_offsets(m):
    with torch.no_grad():
        last = m.conv_offset[-1] if hasattr(m, "conv_offset") else m.conv_offset_q[-1]
        last.weight.zero_()
    return m


def _axis(n: int, offset: float, denom: float) -> np.ndarray:
    return (np.arange(n) + offset) / denom * 2 - 1


CASES = {
    # name: (module, the normalised reference axis of the 4×4 key grid; DAT++'s half-cell-shifted grid puts its last
    # row/column outside [-1, 1], where the unbounded-offset variant clamps the positions)
    "dat_v1": (lambda: attentions.build("dat", dim=16, num_heads=2, variant="v1", stride=4, offset_kernel=5,
                                        offset_range_factor=2.0, rpe_size=16), _axis(4, 0.5, 4)),
    "dat_pp": (lambda: attentions.build("dat", dim=16, num_heads=2, stride=4, offset_kernel=5, rpe_size=16),
               _axis(4, 0.5, 3)),
    "dbra": (lambda: attentions.build("dbra", dim=16, num_heads=2, n_win=2, topk=2, offset_stride=4,
                                      offset_kernel=5, rpe_size=16, n_groups=2), _axis(4, 0.5, 4)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_offsets_draw_the_reference_grid(case):
    build, axis = CASES[case]
    torch.manual_seed(0)
    m = _zero_offsets(build()).eval()
    with torch.no_grad(), attentions.inspect(m) as rec:
        m(torch.randn(1, 16, 16, 16))
    d = rec.records[0].data
    ref = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1)  # (4, 4, 2) (y, x)
    expected = np.clip(ref, -1, 1)
    for g in range(d["positions"].shape[1]):
        np.testing.assert_allclose(d["positions"][0, g].numpy(), expected, atol=1e-6, rtol=0)  # float32 rounding
        np.testing.assert_allclose(d["offsets"][0, g].numpy(), expected - ref, atol=1e-6, rtol=0)  # 0 but clamps
    fig, ax = plt.subplots()
    drawn = draw_sampling(ax, PIXELS, rec.records[0])

    def to_pixels(p):  # normalised p on the 16-token grid (align corners) is token (p + 1)/2·15, centre (t + ½)·4
        return ((p.reshape(-1, 2) + 1) / 2 * 15 + 0.5) * 4

    offsets = [c.get_offsets() for c in ax.collections if hasattr(c, "get_offsets") and len(c.get_offsets())]
    for ref_drawn, pos_drawn in drawn:
        np.testing.assert_allclose(pos_drawn, to_pixels(expected), atol=1e-4)
        np.testing.assert_allclose(ref_drawn, to_pixels(ref), atol=1e-4)
        assert any(np.allclose(o, to_pixels(expected)[:, ::-1], atol=1e-4) for o in offsets)  # scatter is (x, y)
    plt.close(fig)
