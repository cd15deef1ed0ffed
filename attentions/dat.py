"""DAT: deformable attention of DAT (CVPR 2022) and DAT++, one module with a ``variant`` switch.

Papers: "Vision Transformer with Deformable Attention", Xia et al., CVPR 2022, arXiv 2201.00520 (``variant="v1"``);
"DAT++: Spatially Dynamic Vision Transformer with Deformable Attention", Xia et al., arXiv 2309.01430
(``variant="pp"``, the default). Official code: LeapLabTHU/DAT ``models/dat_blocks.py`` ``DAttentionBaseline``,
commit 566a593 (v1) and commit 32173fc (DAT++). Defaults are DAT-T++ stage 1 (C=64, 2 heads, 1 group, stride 8,
offset kernel 9, unbounded offsets, 56×56 table).

What it computes, for x of shape (B, H, W, C), G groups, m heads of hc = C/m channels:

1. q = ``proj_q``(x) (1×1 conv). The offset net ``conv_offset`` (depthwise k×k conv with stride s, LayerNorm over
   the C/G channels, GELU, 1×1 conv to 2 channels), shared by the groups, runs on each group's channel slice of q
   and gives (Δy, Δx) on an Hk×Wk grid, Hk = ⌊(H + 2p − k)/s⌋ + 1 with p = k//2 (DAT++: p = 0 when k == s).
2. Offset range: with ``offset_range_factor`` r ≥ 0 (v1: r > 0) Δ = tanh(Δ)·r·(1/(Hk−1), 1/(Wk−1))
   (v1: (1/Hk, 1/Wk)). Positions pos = ref + Δ, where ref_i = (i + 0.5)/(Hk − 1)·2 − 1 (DAT++, a half-cell
   shifted grid whose last row/column lies outside [-1, 1]) or (i + 0.5)/Hk·2 − 1 (v1); with r < 0 pos is
   clamped to [-1, 1] (DAT++) or passed through tanh (v1).
3. Keys/values: x (not q) bilinearly sampled at pos per group (``grid_sample``, align_corners=True, zero padding),
   then ``proj_k``/``proj_v`` (1×1 convs mixing all groups' channels).
4. Logits q·kᵀ·hc^-0.5 plus a bias read bilinearly from ``rpe_table`` (m, 2Th−1, 2Tw−1) at (query − pos)/2,
   query grid i/(H−1)·2−1 (DAT++) or (i + 0.5)/H·2−1 (v1); softmax over the Nk = Hk·Wk keys; ·v; ``proj_out``.

The channel layout is the official one (group-major, head-major splits of C), so parameter names and shapes are
the official ones and ``convert_official`` is the identity.

Differences from official:
    * Input and output are channels-last (B, H, W, C); the module permutes to NCHW inside and returns
      ``y`` only (the official also returns ``pos`` and ``ref``; :meth:`DAT.sample_positions` gives them).
    * Only the default table RPE (``use_pe=True``) is implemented; ``dwc_pe``, ``fixed_pe``, ``log_cpb``
      (DAT++) and ``no_off`` are not. Dropout (``attn_drop``, ``proj_drop``; 0 in every release) is omitted.
    * The table has its own size ``rpe_size`` and is always read in normalised coordinates, so any H×W works in
      both variants (DAT++ does this already; official v1 reshapes the table by the input's H, W and fails
      unless they equal the table's size — where they do, the results are identical).
    * A key grid or query grid one point wide (Hk = 1 in DAT++, H = 1) puts that point at the centre (0) and
      uses 1 instead of 1/(Hk − 1) in the offset range; the official code divides by zero there.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
from torch import nn

from .base import Attention, check_input
from .config import AttentionConfig, require, require_groups, require_odd_kernel, require_size, size_pair
from .cost import Cost
from .profiling import part
from .deformable import LayerNormProxy, align_corners_grid, norm_grid, pixel_to_agent_attention, rpe_bias, sample_at
from .registry import register

__all__ = ["DAT", "DATConfig"]


@dataclasses.dataclass(frozen=True)
class DATConfig(AttentionConfig):
    """
    Args:
        variant: ``"pp"`` (DAT++, arXiv 2309.01430) or ``"v1"`` (DAT, CVPR 2022): grid, offset-range and padding
            conventions (see the module docstring).
        n_groups: offset groups G; ``num_heads`` and ``dim`` must be divisible by it.
        stride: stride s of the offset conv; the key grid is about (H/s)×(W/s).
        offset_kernel: odd kernel k of the depthwise offset conv (official per stage: 9, 7, 5, 3).
        offset_range_factor: r; DAT++ releases use -1 (unbounded offsets, positions clamped), v1 releases 2.
        rpe_size: (Th, Tw) (or one int) the bias table is built for: ``rpe_table`` is (heads, 2Th−1, 2Tw−1);
            the official module uses its construction-time feature-map size (stage 1 at 224²: 56).
    """

    variant: Literal["pp", "v1"] = "pp"
    n_groups: int = 1
    stride: int = 8
    offset_kernel: int = 9
    offset_range_factor: float = -1.0
    rpe_size: int | tuple[int, int] = 56

    def validate(self) -> None:
        super().validate()
        require(self.variant in ("pp", "v1"), "variant", self.variant, "'pp' (DAT++) or 'v1' (DAT, CVPR 2022)")
        require_groups(self.n_groups, self.num_heads, self.dim)
        require(self.stride >= 1, "stride", self.stride, "an integer >= 1")
        require_odd_kernel("offset_kernel", self.offset_kernel)
        require(
            math.isfinite(self.offset_range_factor),
            "offset_range_factor",
            self.offset_range_factor,
            "a finite float (< 0: unbounded offsets)",
        )
        require_size("rpe_size", self.rpe_size)

    @property
    def offset_padding(self) -> int:
        """Padding of the offset conv: k//2, except 0 in DAT++ when k == s."""
        k = self.offset_kernel
        return 0 if (self.variant == "pp" and k == self.stride) else k // 2

    def key_grid(self, H: int, W: int) -> tuple[int, int]:
        """(Hk, Wk), the offset conv's output size for an H×W input; raises unless both are >= 1."""
        k, s, p = self.offset_kernel, self.stride, self.offset_padding
        if H + 2 * p < k or W + 2 * p < k:
            raise ValueError(
                f"dat: input H={H}, W={W} too small for offset_kernel={k} with padding {p}: "
                f"expected H, W >= {k - 2 * p}"
            )
        return (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1


@register("dat")
class DAT(Attention[DATConfig]):
    """Deformable attention (DAT++ or DAT v1) on (B, H, W, C)."""

    def build(self, c: DATConfig) -> None:
        C, Cg = c.dim, c.dim // c.n_groups
        self.scale = c.head_dim**-0.5
        self.conv_offset = nn.Sequential(
            nn.Conv2d(Cg, Cg, c.offset_kernel, c.stride, c.offset_padding, groups=Cg),
            LayerNormProxy(Cg),
            nn.GELU(),
            nn.Conv2d(Cg, 2, 1, bias=False),
        )
        self.proj_q = nn.Conv2d(C, C, 1)
        self.proj_k = nn.Conv2d(C, C, 1)
        self.proj_v = nn.Conv2d(C, C, 1)
        self.proj_out = nn.Conv2d(C, C, 1)
        th, tw = size_pair(c.rpe_size)
        self.rpe_table = nn.Parameter(torch.empty(c.num_heads, 2 * th - 1, 2 * tw - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)

    # -- grids ------------------------------------------------------------------------------------------------
    def reference_grid(self, Hk: int, Wk: int, device=None, dtype=None) -> torch.Tensor:
        """(Hk, Wk, 2) reference points (y, x): (i + 0.5)/(Hk − 1)·2 − 1 (DAT++) or (i + 0.5)/Hk·2 − 1 (v1)."""
        if self.config.variant == "v1":
            return norm_grid(Hk, Wk, 0.5, Hk, Wk, device, dtype)
        return norm_grid(Hk, Wk, 0.5, Hk - 1, Wk - 1, device, dtype)

    def query_grid(self, H: int, W: int, device=None, dtype=None) -> torch.Tensor:
        """(H, W, 2) query coordinates (y, x): i/(H − 1)·2 − 1 (DAT++) or (i + 0.5)/H·2 − 1 (v1)."""
        if self.config.variant == "v1":
            return norm_grid(H, W, 0.5, H, W, device, dtype)
        return align_corners_grid(H, W, device, dtype)

    def _positions(self, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw offsets (B·G, 2, Hk, Wk) -> sampling positions and reference grid, both (B·G, Hk, Wk, 2), (y, x)."""
        c = self.config
        Hk, Wk = offset.shape[-2:]
        r = c.offset_range_factor
        v1 = c.variant == "v1"
        if (r > 0) if v1 else (r >= 0):
            dh, dw = (Hk, Wk) if v1 else (max(Hk - 1, 1), max(Wk - 1, 1))
            rng = offset.new_tensor([1.0 / dh, 1.0 / dw]).view(1, 2, 1, 1)
            offset = offset.tanh() * rng * r
        offset = offset.permute(0, 2, 3, 1)
        ref = self.reference_grid(Hk, Wk, offset.device, offset.dtype).expand_as(offset)
        if r >= 0:
            pos = ref + offset
        elif v1:
            pos = (ref + offset).tanh()
        else:
            pos = (ref + offset).clamp(-1.0, 1.0)
        return pos, ref

    def sample_positions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The official module's extra outputs for x (B, H, W, C): ``pos`` and ``ref``, each (B, G, Hk, Wk, 2)."""
        B, H, W, C = x.shape
        G = self.config.n_groups
        q = self.proj_q(x.permute(0, 3, 1, 2))
        pos, ref = self._positions(self.conv_offset(q.reshape(B * G, C // G, H, W)))
        return pos.reshape(B, G, *pos.shape[1:]), ref.reshape(B, G, *ref.shape[1:])

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        check_input(x, c.dim, self.name)
        B, H, W, C = x.shape
        G, m, hc = c.n_groups, c.num_heads, c.head_dim
        c.key_grid(H, W)  # a clear error for too small inputs, before the conv fails
        x = x.permute(0, 3, 1, 2)  # NCHW view (channels_last memory): what the official module takes

        with part("dat", "projections"):
            q = self.proj_q(x)
        with part("dat", "offsets_sampling_rpe"):
            offset = self.conv_offset(q.reshape(B * G, C // G, H, W))  # (B·G, 2, Hk, Wk)
            Hk, Wk = offset.shape[-2:]
            Nk = Hk * Wk
            pos, ref = self._positions(offset)
            # keys and values come from x, sampled per group, then projected across all groups' channels
            xs = sample_at(x.reshape(B * G, C // G, H, W), pos).reshape(B, C, 1, Nk)
        with part("dat", "projections"):
            k = self.proj_k(xs).reshape(B * m, hc, Nk).transpose(1, 2)
            v = self.proj_v(xs).reshape(B * m, hc, Nk).transpose(1, 2)
        qh = q.reshape(B * m, hc, H * W).transpose(1, 2)

        with part("dat", "offsets_sampling_rpe"):
            q_grid = self.query_grid(H, W, x.device, pos.dtype).reshape(H * W, 2)
            bias = rpe_bias(self.rpe_table, q_grid, pos.reshape(B * G, Nk, 2), G)  # (B·m, HW, Nk)
        if self._inspector is not None:
            self._inspector.record(self, "dat_sampling", q=qh, k=k, bias=bias, ref=ref, pos=pos, size=(H, W))
        with part("dat", "attention"):
            out = pixel_to_agent_attention(qh, k, v, bias, self.scale)  # (B·m, HW, hc)
        out = out.transpose(1, 2).reshape(B, C, H, W)
        with part("dat", "projections"):
            return self.proj_out(out).permute(0, 2, 3, 1)

    # -- cost -------------------------------------------------------------------------------------------------
    def cost(self, H: int, W: int) -> Cost:
        """Multiply-adds of one image at H×W, by part, counted as fvcore counts the official module.

        * projections: proj_q and proj_out on the H·W queries, proj_k and proj_v on the Nk sampled tokens,
          C² each per token (biases not counted).
        * attention: q·kᵀ and attn·v, 2·HW·Nk·C.
        * offsets_sampling_rpe: the depthwise offset conv Nk·C·k², its LayerNorm 5·Nk·C (fvcore's affine norm
          rule: 5 per input element), the 1×1 offset conv 2·Nk·C, and the two bilinear ``grid_sample`` calls at
          fvcore's 4 per output element: keys 4·C·Nk, RPE 4·heads·HW·Nk. GELU, tanh, clamp and softmax: 0.
        """
        c = self.config
        Hk, Wk = c.key_grid(H, W)
        N, Nk, C = H * W, Hk * Wk, c.dim
        offsets = Nk * C * c.offset_kernel**2 + 5 * Nk * C + 2 * Nk * C
        sampling = 4 * C * Nk + 4 * c.num_heads * N * Nk
        return Cost(
            macs={
                "projections": 2 * N * C * C + 2 * Nk * C * C,
                "attention": 2 * N * Nk * C,
                "offsets_sampling_rpe": offsets + sampling,
            },
            keys_per_query=Nk,
        )
