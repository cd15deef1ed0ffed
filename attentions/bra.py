"""BRA: bi-level routing attention, BiFormer's legacy NHWC module.

Paper: "BiFormer: Vision Transformer with Bi-Level Routing Attention", Zhu et al., CVPR 2023, arXiv 2303.08810.
Official code: rayleizhu/BiFormer ``ops/bra_legacy.py`` (``BiLevelRoutingAttention``), commit 1697bbb, the module
every released BiFormer-T/S/B checkpoint uses (DeBiFormer vendors it unchanged). Defaults are BiFormer-T/S stage 1.

What it computes, for x of shape (B, H, W, C), S = ``n_win`` regions per side, P = S² regions:

1. (``auto_pad``) zero-pad x at the bottom/right to multiples of S, *before* the qkv projection, so the padded
   tokens become the projection's bias vectors and take part, unmasked, in routing, attention and LCE.
2. q, k, v = ``qkv.qkv``(x) split [q | k | v]; grouped into P row-major regions of (H/S)·(W/S) tokens.
3. Routing: region means of q and k over all C channels (detached), logits = (q_r · C^-0.5) k_rᵀ, top-``topk``
   region indices per query region, shared by every head.
4. Each query attends, per head (channels split head-major), to the tokens of its routed regions with scale
   **C^-0.5** (not head_dim^-0.5, as in the official code).
5. LCE: a depthwise ``lce_kernel``×``lce_kernel`` conv of v in image layout, added before ``wo``; crop.

Differences from official:
    * The softmax routing weights of ``TopkRouting`` are not computed: every released model ignores them
      (``soft_routing=False``). The exploration leftovers (``kv_downsample_mode`` other than identity,
      ``param_routing``, ``diff_routing``, ``soft_routing``, ``qk_dim != dim``, ``param_attention='qkv'``) are
      not offered.
    * ``lce_kernel=0`` skips the LCE; the official ``side_dwconv <= 0`` adds ``zeros_like(v)``: same result.
    * ``impl`` chooses how the routed keys/values are reached (:func:`attentions.routing.routed_attention`):
      ``"official"`` is the official expanded ``torch.gather``; ``"torch"`` (the default on CPU) the lean path
      with the same values and gradients; ``"triton"`` the fused kernel. The official gathers k and v as one
      concatenated tensor, ``"official"`` here gathers them separately (same values, same P-fold backward buffer).
    * An input whose H or W is not a multiple of ``n_win`` without ``auto_pad`` raises a ``ValueError`` instead
      of the official bare ``assert``.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .backends import select
from .base import Attention, check_input
from .config import require_odd_kernel
from .cost import Cost
from .profiling import part
from .registry import register
from .routing import RoutedConfig, RoutedImpl, region_merge, region_partition, route_topk, routed_attention

__all__ = ["BRA", "BRAConfig"]


@dataclasses.dataclass(frozen=True)
class BRAConfig(RoutedConfig):
    """
    Args:
        n_win: regions per side S (P = S² regions); H and W must be multiples of it unless ``auto_pad``.
        topk: routed regions per query region, 1 ≤ topk ≤ n_win² (BiFormer stages 1-3: 1, 4, 16).
        lce_kernel: kernel of the depthwise LCE conv on v; odd, or 0 for no LCE (official ``side_dwconv``).
        auto_pad: zero-pad the input to multiples of ``n_win`` before the projection and crop the output.
        impl: routed-attention backend: ``"auto"`` (the first of :mod:`attentions.backends` that can run: Triton
            on CUDA, else torch), ``"torch"`` (lean), ``"official"`` (expanded gather, as the official code) or
            ``"triton"`` (an error naming the reason where it cannot run).
    """

    lce_kernel: int = 5
    auto_pad: bool = False
    impl: RoutedImpl = "auto"

    def validate(self) -> None:
        super().validate()
        require_odd_kernel("lce_kernel", self.lce_kernel, zero_means="no LCE")


class _QKVLinear(nn.Module):
    """Holds the fused projection under the official name ``qkv.qkv`` (official ``QKVLinear``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.qkv(x)


@register("bra")
class BRA(Attention[BRAConfig]):
    """Bi-level routing attention on (B, H, W, C); see the module docstring."""

    def build(self, c: BRAConfig) -> None:
        self.scale = c.dim**-0.5  # full channel width, as the official qk_dim ** -0.5
        self.qkv = _QKVLinear(c.dim)
        self.wo = nn.Linear(c.dim, c.dim)
        k = c.lce_kernel
        self.lepe = nn.Conv2d(c.dim, c.dim, k, padding=k // 2, groups=c.dim) if k > 0 else None

    def padded_size(self, H: int, W: int) -> tuple[int, int]:
        """The (H, W) the regions are cut from: (H, W) itself, or rounded up to multiples of n_win with auto_pad."""
        s = self.config.n_win
        if H % s == 0 and W % s == 0:
            return H, W
        if not self.config.auto_pad:
            raise ValueError(
                f"{self.name}: input H={H}, W={W} must be multiples of n_win={s}; "
                "pass auto_pad=True to zero-pad to the next multiple (as the official auto_pad does)"
            )
        return -(-H // s) * s, -(-W // s) * s

    def _project(self, x: torch.Tensor):
        """Pad, project and group by region: x (B, H, W, C) -> q, k, v (B, P, n, C) and the padded (H, W)."""
        check_input(x, self.config.dim, self.name)
        B, H_in, W_in, C = x.shape
        H, W = self.padded_size(H_in, W_in)
        if (H, W) != (H_in, W_in):
            x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))
        # views of one region-major copy; the image-layout projection output is freed at once
        with part("bra", "projections"):
            qkv = self.qkv(x)
        q, k, v = region_partition(qkv, self.config.n_win).split(C, dim=-1)
        return q, k, v, H, W

    def _route(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), part("bra", "routing"):  # hard routing: the region means get no graph
            return route_topk(q.mean(2), k.mean(2), self.config.topk, self.scale)

    def routes(self, x: torch.Tensor) -> torch.Tensor:
        """The routed region indices (B, P, topk) for x (B, H, W, C), best first (for inspection/visualisation)."""
        q, k, _, _, _ = self._project(x)
        return self._route(q, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        H_in, W_in = x.shape[1:3]
        q, k, v, H, W = self._project(x)
        s, m = self.config.n_win, self.config.num_heads
        impl = select(self, "routed", x)
        idx = self._route(q, k)
        if self._inspector is not None:
            self._inspector.record(self, "bra_routing", q=q, k=k, idx=idx, size=(H_in, W_in), padded=(H, W))
        with part("bra", "attention"):
            out = routed_attention(q, k, v, idx, m, self.scale, impl)
        out = region_merge(out, s, H, W)
        if self.lepe is not None:
            # a C-channel copy of v: a view into the projection would keep all 3C channels alive for the backward
            v_img = region_merge(v, s, H, W).permute(0, 3, 1, 2)  # (B, C, H, W)
            with part("bra", "lce"):
                out = out + self.lepe(v_img).permute(0, 2, 3, 1)
        with part("bra", "projections"):
            out = self.wo(out)
        if (H, W) != (H_in, W_in):
            out = out[:, :H_in, :W_in].contiguous()
        return out

    def cost(self, H: int, W: int) -> Cost:
        """MACs of one image; with auto_pad, of the padded size the module actually computes on."""
        c = self.config
        H, W = self.padded_size(H, W)
        N, C, P = H * W, c.dim, c.n_win**2
        keys = c.topk * (N // P)
        return Cost(
            macs={
                "projections": N * C * 3 * C + N * C * C,
                "routing": P * P * C,  # region affinity; the region means are additions (0 MACs)
                "attention": 2 * N * keys * C,  # QKᵀ and AV
                "lce": N * C * c.lce_kernel**2,
            },
            keys_per_query=keys,
        )
