"""DBRA: deformable bi-level routing attention, exactly as DeBiFormer's official code computes it.

Paper: "DeBiFormer: Vision Transformer with Deformable Agent Bi-level Routing Attention", arXiv 2410.08582,
ACCV 2024. Official code: maclong01/DeBiFormer, ``classification/debiformer.py`` (``DeBiLevelRoutingAttention``) at
commit 1ceb090. Specification: ``shared/design/dbra-debiformer.md`` §3.

In one paragraph: a light offset network on the queries moves an s-strided grid of Hk×Wk reference points; the
*input* is sampled there (one position per channel group) to give "agent" tokens. The agents run bi-level routing
attention against the full-resolution keys/values (regions of the agent grid and of the pixel grid are the same
n_win×n_win windows), are refined by a residual FFN and a LayerNorm, and then every pixel attends to all agents with
a continuous relative-position bias read from ``rpe_table``. Both softmax scales are dim^-0.5 (not head_dim^-0.5).

Differences from official:

* The per-stage constants (``n_groups``, ``offset_kernel``, ``offset_stride``, ``ffn_ratio``, ``rpe_size``) are
  constructor arguments; the official code hard-codes them by ``(param_size, dim)`` and fails for any other dim.
* Bug fixes: the ``uto_pad`` keyword typo of the official ``Block`` does not arise (we take ``auto_pad``), and
  without ``auto_pad`` the agent-grid size is taken from the offsets (the official ``Hg, Wg`` are unbound there).
  An input the official code cannot run raises a ``ValueError`` naming H, W and the requirement, not an assert.
* ``auto_pad`` defaults to True (official: False), so the defaults run on every grid (7, 14, 28, …); an input
  that fits is computed exactly as without it.
* ``offset_channels=2`` ("paper intent") predicts separate (dy, dx) offsets; ``1`` (default) is the official single
  channel added to both y and x, so points only move along the diagonal.
* ``lce_kernel=0`` disables the LCE (the official lambda would return a full-resolution zero tensor and fail).
* ``impl`` picks how the two attentions run; all compute the same function. ``"official"``: as the released code
  (one 3C-wide qkv conv, expanded ``torch.gather``, materialised back attention). ``"torch"``: the lean CPU path
  (``routing.routed_attention``'s chunked Function, ``deformable.pixel_to_agent_attention_lean``, and q, k, v as
  three separate C-wide convs on slices of the same weight, so that saved q and v do not keep k alive); float32
  outputs and gradients equal ``"official"``'s to 1e-6 of their scale, at a fraction of its training-step peak
  memory (measured in ``docs/dbra.md``). ``"triton"``: fused kernels. ``"auto"``: per attention, the first
  backend of :mod:`attentions.backends` that can run (Triton on CUDA, else torch).
* Reference points and the query grid are built in float32 (float64 for float64 input) even for half-precision
  input; the official code builds them in the input dtype. Identical in float32.
* A 1-pixel-wide query grid sits at 0 instead of dividing by zero (deformable.align_corners_grid).
"""
from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .backends import select
from .base import Attention, check_input
from .config import require, require_groups, require_odd_kernel, require_size, size_pair
from .cost import Cost
from .profiling import part
from .deformable import LayerNormProxy, norm_grid, pixel_to_agent_attention_lean, pixel_to_agent_attention_torch, sample_at
from .registry import register
from .routing import RoutedConfig, RoutedImpl, region_merge, region_partition, route_topk, routed_attention

__all__ = ["DBRA", "DBRAConfig"]

_FVCORE_LN = 5  # fvcore's layer_norm handle: 5 MACs per element with an affine transform


@dataclasses.dataclass(frozen=True)
class DBRAConfig(RoutedConfig):
    """Defaults are DeBiFormer-T/S stage 1 (dim 64, 2 heads, 56×56 at 224² input).

    Args:
        n_win: regions per side; the pixel grid and the agent grid are both cut into n_win×n_win regions.
        topk: regions each agent region attends to, 1..n_win².
        n_groups: offset groups G; each group of dim/G channels gets its own agent positions.
        offset_kernel: kernel of the offset network's depthwise conv (official ``kk``), odd.
        offset_stride: stride s of that conv and of the LCE; the agent grid is Hk = (H - 1) // s + 1 per side.
        ffn_ratio: hidden ratio of the agent-refinement FFN (official ``expain_ratio``).
        rpe_size: the q_size (h, w) that sizes ``rpe_table`` (num_heads, 2h-1, 2w-1); an int means (n, n).
        lce_kernel: kernel of the strided depthwise LCE on V (official ``side_dwconv``), odd; 0 disables it.
        offset_channels: 1 = the official single offset channel broadcast to (y, x); 2 = separate (dy, dx).
        auto_pad: zero-pad H, W (and then the agent grid) to multiples of n_win and crop the output. On by
            default (the official default is off): with offset_stride 8 only multiples of 56 fit otherwise, so
            the common grids 14 and 28 would fail. Padding is a no-op on an input that fits, so outputs there
            and official checkpoints are unaffected; ``auto_pad=False`` restores the official strictness.
        impl: ``"torch"`` (lean: chunked, recomputing attentions), ``"official"`` (expanded gather, materialised
            back attention), ``"triton"`` or ``"auto"`` (per attention, Triton where :mod:`attentions.backends`
            finds it can run, else torch).
    """

    topk: int = 4
    n_groups: int = 1
    offset_kernel: int = 9
    offset_stride: int = 8
    ffn_ratio: float = 3
    rpe_size: int | tuple[int, int] = 56
    lce_kernel: int = 5
    offset_channels: int = 1
    auto_pad: bool = True
    impl: RoutedImpl = "auto"

    def validate(self) -> None:
        super().validate()
        require_groups(self.n_groups, self.num_heads, self.dim)
        require(self.offset_channels in (1, 2), "offset_channels", self.offset_channels, "1 or 2")
        require_odd_kernel("offset_kernel", self.offset_kernel)
        require(self.offset_stride >= 1, "offset_stride", self.offset_stride, "an integer >= 1")
        require(self.ffn_ratio > 0 and int(self.dim * self.ffn_ratio) >= 1, "ffn_ratio", self.ffn_ratio,
                "a positive number with int(dim * ffn_ratio) >= 1")
        require_odd_kernel("lce_kernel", self.lce_kernel, zero_means="no LCE")
        require_size("rpe_size", self.rpe_size)

    @property
    def rpe_hw(self) -> tuple[int, int]:
        return size_pair(self.rpe_size)

    @property
    def ffn_hidden(self) -> int:
        return int(self.dim * self.ffn_ratio)


class _QKVConv(nn.Module):
    """1×1 conv C -> 3C (official ``QKVConv``; the parameter lives at ``qkv_conv.qkv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.qkv(x).chunk(3, dim=1)

    def separate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same q, k, v from three C-wide convs on slices of the weight, each its own tensor.

        A view of one 3C-channel output would keep all of it alive while q (offsets, back attention) or v (LCE)
        is saved for the backward; separate tensors let k go once it has been regrouped by region.
        """
        return tuple(F.conv2d(x, w, b) for w, b in zip(self.qkv.weight.chunk(3), self.qkv.bias.chunk(3)))


class _ConvFFN(nn.Module):
    """1×1 conv -> x + dwconv3×3(x) -> GELU -> 1×1 conv on NCHW (official ``TransformerMLPWithConv``, no dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(x)
        with part("dbra", "lce"):  # the cost model counts this 3×3 depthwise conv with the LCE
            x = x + self.dwc(x)
        return self.linear2(F.gelu(x))


@functools.lru_cache(maxsize=None)
def _pixel_agent_triton():
    from .kernels.pixel_agent_attention import pixel_agent_attention_triton  # importable: checked by choose()

    return pixel_agent_attention_triton


def _pad_hw(t: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Zero-pad dims 1 (H) and 2 (W) of a (N, H, W, ...) tensor at the bottom/right."""
    if pad_h == 0 and pad_w == 0:
        return t
    return F.pad(t, (0, 0) * (t.dim() - 3) + (0, pad_w, 0, pad_h))


@register("dbra")
class DBRA(Attention[DBRAConfig]):
    """Deformable bi-level routing attention on (B, H, W, C); see the module docstring and ``docs/dbra.md``."""

    def build(self, c: DBRAConfig) -> None:
        C, Cg, m = c.dim, c.dim // c.n_groups, c.num_heads
        rh, rw = c.rpe_hw
        self.scale = C**-0.5  # official: qk_dim^-0.5 for both attentions
        self.rpe_table = nn.Parameter(torch.zeros(m, 2 * rh - 1, 2 * rw - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)
        k = c.lce_kernel
        self.lepe1 = nn.Conv2d(C, C, k, stride=c.offset_stride, padding=k // 2, groups=C) if k > 0 else None
        self.qkv_conv = _QKVConv(C)
        self.proj_q, self.proj_k, self.proj_v, self.proj_out, self.unifyheads1 = (nn.Conv2d(C, C, 1) for _ in range(5))
        kk = c.offset_kernel
        self.conv_offset_q = nn.Sequential(
            nn.Conv2d(Cg, Cg, kk, stride=c.offset_stride, padding=kk // 2, groups=Cg, bias=False),
            LayerNormProxy(Cg),
            nn.GELU(),
            nn.Conv2d(Cg, c.offset_channels, 1, bias=False),
        )
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self.norm2 = nn.LayerNorm(C, eps=1e-6)
        self.mlp = _ConvFFN(C, c.ffn_hidden)

    # -- sizes --------------------------------------------------------------------------------------------------
    def grid_sizes(self, H: int, W: int) -> tuple[int, int, int, int, int, int]:
        """(Hp, Wp, Hk, Wk, Hg, Wg): padded input, sampled agent grid, padded agent grid for an H×W input.

        Raises ValueError, naming H, W and the requirement, when ``auto_pad`` is off and the official constraint
        (H, W, Hk, Wk all multiples of n_win) does not hold.
        """
        c = self.config
        n, s, kk = c.n_win, c.offset_stride, c.offset_kernel

        def up(v: int) -> int:
            return -(-v // n) * n if c.auto_pad else v

        Hp, Wp = up(H), up(W)
        Hk, Wk = ((v + 2 * (kk // 2) - kk) // s + 1 for v in (Hp, Wp))
        if not c.auto_pad and any(v % n for v in (H, W, Hk, Wk)):
            raise ValueError(
                f"dbra: input H×W = {H}×{W} does not fit n_win={n} without auto_pad: H and W must be multiples of "
                f"n_win, and so must the agent grid Hk×Wk = {Hk}×{Wk} (Hk = (H - 1) // offset_stride + 1, "
                f"offset_stride={s}); e.g. H, W multiples of n_win·offset_stride = {n * s}, or pass auto_pad=True"
            )
        return Hp, Wp, Hk, Wk, up(Hk), up(Wk)

    def _impls(self, x: torch.Tensor) -> tuple[str, str]:
        """(routed-attention backend, back-attention backend) for this input (:func:`attentions.backends.choose`),
        recorded on the module for the results row."""
        return select(self, "routed", x), select(self, "pixel_agent", x)

    # -- steps --------------------------------------------------------------------------------------------------
    def agent_positions(self, q: torch.Tensor) -> torch.Tensor:
        """Deformed agent positions (B·G, Hk, Wk, 2), (y, x) in [-1, 1], from the queries ``q`` (B, C, H, W)."""
        B, C, H, W = q.shape
        G = self.config.n_groups
        with part("dbra", "offsets_sampling_rpe"):
            off = self.conv_offset_q(q.reshape(B * G, C // G, H, W))  # (B·G, offset_channels, Hk, Wk)
            Hk, Wk = off.shape[-2:]
            dtype = torch.promote_types(off.dtype, torch.float32)
            ref = norm_grid(Hk, Wk, 0.5, Hk, Wk, device=off.device, dtype=dtype)  # pixel-centre (i + 0.5) / Hk
            # a single offset channel broadcasts onto both (y, x): the official points move along the diagonal
            pos = (ref + off.permute(0, 2, 3, 1).to(dtype)).clamp(-1.0, 1.0)
        if self._inspector is not None:
            self._inspector.record(self, "dbra_positions", ref=ref, offset=off.permute(0, 2, 3, 1), pos=pos)
        return pos

    def sample_agents(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Agents (B, C, Hk, Wk) sampled from ``x`` (B, C, H, W); channel group g at ``pos[b·G + g]``."""
        B, C, H, W = x.shape
        G = self.config.n_groups
        with part("dbra", "offsets_sampling_rpe"):
            return sample_at(x.reshape(B * G, C // G, H, W), pos).reshape(B, C, pos.shape[1], pos.shape[2])

    def refine_agents(self, a0, k, v, lce, impl: str) -> torch.Tensor:
        """Routed attention of the agents to the pixels, then residual FFN and LayerNorm: A0 -> A3.

        Args:
            a0: (B, C, Hg, Wg) sampled agents; k, v: (B, C, H, W) pixel keys/values; lce: (B, C, Hg, Wg) or None.
        """
        c = self.config
        n = c.n_win
        B, C, Hg, Wg = a0.shape
        with part("dbra", "projections"):
            qa = self.proj_q(a0)
        qa = region_partition(qa.permute(0, 2, 3, 1), n)  # (B, P, Hg·Wg/P, C)
        kw = region_partition(k.permute(0, 2, 3, 1), n)  # (B, P, H·W/P, C)
        vw = region_partition(v.permute(0, 2, 3, 1), n)
        # regions of agents follow their grid index, not their deformed position (official)
        with part("dbra", "routing"):
            idx = route_topk(qa.mean(2), kw.mean(2), c.topk, self.scale)
        if self._inspector is not None:
            self._inspector.record(self, "dbra_routing", qa=qa, kw=kw, idx=idx, agent_grid=(Hg, Wg),
                                   key_grid=tuple(k.shape[-2:]))
        with part("dbra", "attention"):
            oa = routed_attention(qa, kw, vw, idx, c.num_heads, self.scale, impl=impl)
        oa = region_merge(oa, n, Hg, Wg).permute(0, 3, 1, 2)
        if lce is not None:
            oa = oa + lce
        with part("dbra", "projections"):  # unifyheads, the FFN's 1×1 convs and both LayerNorms
            a1 = a0 + self.unifyheads1(oa)
            a2 = a1 + self.mlp(self.norm2(a1.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            return self.norm(a2.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def back_attention(self, q, agents, pos, impl: str) -> torch.Tensor:
        """Every pixel's query (from ``qkv_conv``, not re-projected) against all agents, with the RPE bias.

        Args:
            q: (B, C, H, W); agents: (B, C, Hg, Wg) refined agents; pos: (B·G, Hg, Wg, 2);
            impl: ``"official"`` (the official materialised computation), ``"torch"`` (chunked, recomputing
                :func:`~attentions.deformable.pixel_to_agent_attention_lean`) or ``"triton"``.
        Returns:
            (B, C, H, W), before ``proj_out``.
        """
        B, C, H, W = q.shape
        m, d = self.config.num_heads, C // self.config.num_heads
        Ns = agents.shape[2] * agents.shape[3]
        args = (pos.reshape(-1, Ns, 2), self.rpe_table, self.config.n_groups, H, W, self.scale)
        with part("dbra", "projections"):
            ka, va = self.proj_k(agents), self.proj_v(agents)

        if impl == "torch":  # heads as views of the (B, C, ·) maps, no copy; the output is channels-last memory,
            # which proj_out's conv keeps (its output permutes to (B, H, W, C) without a copy, and its backward
            # needs no layout conversions)
            qh, kh, vh = (t.reshape(B, m, d, -1).transpose(-1, -2) for t in (q, ka, va))
            with part("dbra", "attention"):  # the RPE bias inside is its own (nested) offsets_sampling_rpe scope
                out = pixel_to_agent_attention_lean(qh, kh, vh, *args)
            return out.transpose(-1, -2).reshape(B, C, H, W)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B·m, h·w, d); channels split head-major
            return t.reshape(B * m, d, -1).transpose(1, 2)

        fn = _pixel_agent_triton() if impl == "triton" else pixel_to_agent_attention_torch
        with part("dbra", "attention"):
            out = fn(heads(q), heads(ka), heads(va), *args)  # (B·m, H·W, d)
        return out.transpose(1, 2).reshape(B, C, H, W)

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) -> (B, H, W, C)."""
        check_input(x, self.config.dim, self.name)
        B, H_in, W_in, _ = x.shape
        Hp, Wp, Hk, Wk, Hg, Wg = self.grid_sizes(H_in, W_in)
        routed_impl, back_impl = self._impls(x)
        xc = _pad_hw(x, Hp - H_in, Wp - W_in).permute(0, 3, 1, 2)  # (B, C, Hp, Wp); pad rows are zeros
        with part("dbra", "projections"):
            q, k, v = self.qkv_conv(xc) if self.config.impl == "official" else self.qkv_conv.separate(xc)
        pos = self.agent_positions(q)  # (B·G, Hk, Wk, 2)
        a0 = self.sample_agents(xc, pos)  # agents come from the input, not from q or v
        with part("dbra", "lce"):
            lce = self.lepe1(v) if self.lepe1 is not None else None
        if (Hg, Wg) != (Hk, Wk):  # auto_pad: padded agents are zeros at pos (0, 0), unmasked later (official)
            a0 = _pad_hw(a0.permute(0, 2, 3, 1), Hg - Hk, Wg - Wk).permute(0, 3, 1, 2)
            lce = None if lce is None else _pad_hw(lce.permute(0, 2, 3, 1), Hg - Hk, Wg - Wk).permute(0, 3, 1, 2)
            pos = _pad_hw(pos, Hg - Hk, Wg - Wk)
        agents = self.refine_agents(a0, k, v, lce, routed_impl)
        del k  # the routed attention saved its own regrouped copy; with separate convs, k's memory goes now
        if self._inspector is not None:
            self._inspector.record(self, "dbra_back", q=q, agents=agents, pos=pos, size=(H_in, W_in))
        out = self.back_attention(q, agents, pos, back_impl)
        with part("dbra", "projections"):
            out = self.proj_out(out).permute(0, 2, 3, 1)
        if (Hp, Wp) != (H_in, W_in):
            out = out[:, :H_in, :W_in]
        return out.contiguous()

    # -- cost ---------------------------------------------------------------------------------------------------
    def cost(self, H: int, W: int) -> Cost:
        """Multiply-adds of one image at H×W with fvcore's conventions (see ``docs/dbra.md``).

        Convs count out-elements × in-channels/groups × kernel area (no bias); ``grid_sample`` counts 4 per output
        element (fvcore's bilinear handle); LayerNorm 5 per element, in the part it belongs to; softmax, GELU,
        mean, top-k, gather, clamp and adds count 0. ``keys_per_query`` is the number of agents Hg·Wg each pixel
        attends to in the back attention (each agent itself attends to topk·H·W/n_win² pixels).
        """
        c = self.config
        Hp, Wp, Hk, Wk, Hg, Wg = self.grid_sizes(H, W)
        C, hid, P, m = c.dim, c.ffn_hidden, c.n_win**2, c.num_heads
        N, Na, Ns = Hp * Wp, Hk * Wk, Hg * Wg
        return Cost(
            macs={
                # qkv_conv, proj_out (pixels); proj_q, unifyheads1, proj_k, proj_v, FFN 1×1s, norm2, norm (agents)
                "projections": N * C * 3 * C + N * C * C + Ns * (4 * C * C + 2 * C * hid + 2 * _FVCORE_LN * C),
                "routing": P * P * C,
                "attention": 2 * Ns * c.topk * (N // P) * C + 2 * N * Ns * C,
                # offset dwconv, LN and 1×1, agent grid_sample, RPE-bias grid_sample
                "offsets_sampling_rpe": Na * C * (c.offset_kernel**2 + _FVCORE_LN + c.offset_channels + 4)
                + 4 * m * N * Ns,
                # the strided LCE on V and the refinement FFN's 3×3 depthwise conv
                "lce": Na * C * c.lce_kernel**2 + Ns * hid * 9,
            },
            keys_per_query=float(Ns),
        )
