"""Agent attention, Swin variant: n pooled agent tokens broker a global softmax attention at linear cost.

Paper: "Agent Attention: On the Integration of Softmax and Linear Attention", Han et al., ECCV 2024,
arXiv 2312.08874. Official code: LeapLabTHU/Agent-Attention ``agent_transformer/models/agent_swin.py``
(``AgentAttention``), commit 207ce3e. In Agent-Swin the agent blocks are built with a 56×56 window that the Swin
block clips to the feature map, so the whole H×W map is one window; this module always treats it so.
Defaults: the official Agent-Swin stage-1 geometry (9 agents, window 56) at the project's stage-1 shape
(C=64, 2 heads).

What it computes, for x of shape (B, H, W, C), N = H·W, n = ``agent_num`` agents, m heads of d = C/m channels:

1. q, k, v = ``qkv``(x); agents A = adaptive-average-pool of q (as an image, all C channels) to √n×√n.
2. Aggregation: V_A = softmax(A·kᵀ·d^-0.5 + B1)·v with B1 = bilinear(``an_bias``, (H, W)) + ``ah_bias`` +
   ``aw_bias`` (agent → key), per head.
3. Broadcast: out = softmax(q·Aᵀ·d^-0.5 + B2)·V_A with B2 = bilinear(``na_bias``, (H, W))ᵀ + ``ha_bias`` +
   ``wa_bias`` (query → agent).
4. out + ``dwc``(v) (3×3 depthwise conv of v as an image), then ``proj``.

Positional biases at sizes other than ``window_size``: ``an_bias``/``na_bias`` (7×7) are resized to (H, W) with
``F.interpolate(mode="bilinear", align_corners=False)``, as the official code resizes them to its window. The row
biases ``ah_bias``/``ha_bias`` (built with Wh rows) are resized along that axis to H, and the column biases
``aw_bias``/``wa_bias`` (Ww columns) along theirs to W, with the same call on a one-pixel-wide map
(``F.interpolate(mode="bilinear", align_corners=False)``, i.e. 1-D linear interpolation between half-pixel
centres, edge values held). A bias whose axis already has the input's size is used as it is, so at
(H, W) == ``window_size`` the result is exactly the official computation.

Differences from official:
    * Input and output are (B, H, W, C), and any H, W >= 1 (also H != W) is one window; the official module takes
      (B·windows, N, C) with a square N, and the Swin block would pad and partition a map larger than the
      window instead of resizing the biases (see above).
    * The biases are broadcast over the batch instead of ``.repeat``-ed (same numbers).
    * Dropout (``attn_drop``, ``proj_drop``; 0 in every release) and the unused ``mask`` argument are omitted.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Attention, check_input
from .config import AttentionConfig, is_perfect_square, require, require_size, size_pair
from .cost import Cost
from .profiling import part
from .registry import register

__all__ = ["AgentAttention", "AgentConfig", "resize_axis"]


def resize_axis(t: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """Resize ``t`` along ``axis`` to ``size`` by bilinear interpolation of a one-pixel-wide map.

    ``F.interpolate(mode="bilinear", align_corners=False)`` with the other axis of width 1, i.e. 1-D linear
    interpolation between half-pixel centres; the identity (no call) when the size already matches.
    """
    axis = axis % t.dim()
    if t.shape[axis] == size:
        return t
    moved = t.movedim(axis, -1)
    lead = moved.shape[:-1]
    flat = moved.reshape(1, -1, moved.shape[-1], 1)  # (1, rest, L, 1): interpolate the L axis only
    out = F.interpolate(flat, size=(size, 1), mode="bilinear", align_corners=False)
    return out.reshape(*lead, size).movedim(-1, axis)


@dataclasses.dataclass(frozen=True)
class AgentConfig(AttentionConfig):
    """
    Args:
        agent_num: agent tokens n, a perfect square (pooled to √n×√n); official Agent-Swin per stage: 9, 16, 49.
        window_size: (Wh, Ww) (or one int) the row/column biases are built for: the feature map the official
            block saw (Agent-Swin-T at 224²: 56, 28, 14 for stages 1-3). Other input sizes resize the biases.
        qkv_bias: bias in the ``qkv`` projection (True in every release).
    """

    agent_num: int = 9
    window_size: int | tuple[int, int] = 56
    qkv_bias: bool = True

    def validate(self) -> None:
        super().validate()
        n = self.agent_num
        root = math.isqrt(n) if n >= 0 else 0
        require(
            n >= 1 and is_perfect_square(n),
            "agent_num",
            n,
            f"a perfect square >= 1 (agents are pooled to sqrt(n) x sqrt(n); nearest: {root**2}, {(root + 1)**2})",
        )
        require_size("window_size", self.window_size)


@register("agent")
class AgentAttention(Attention[AgentConfig]):
    """Agent attention (Agent-Swin, global window) on (B, H, W, C)."""

    def build(self, c: AgentConfig) -> None:
        C, m, n = c.dim, c.num_heads, c.agent_num
        wh, ww = size_pair(c.window_size)
        self.scale = c.head_dim**-0.5
        self.qkv = nn.Linear(C, 3 * C, bias=c.qkv_bias)
        self.proj = nn.Linear(C, C)
        self.dwc = nn.Conv2d(C, C, 3, padding=1, groups=C)
        self.pool = nn.AdaptiveAvgPool2d(math.isqrt(n))
        self.an_bias = nn.Parameter(torch.empty(m, n, 7, 7))
        self.na_bias = nn.Parameter(torch.empty(m, n, 7, 7))
        self.ah_bias = nn.Parameter(torch.empty(1, m, n, wh, 1))
        self.aw_bias = nn.Parameter(torch.empty(1, m, n, 1, ww))
        self.ha_bias = nn.Parameter(torch.empty(1, m, wh, 1, n))
        self.wa_bias = nn.Parameter(torch.empty(1, m, 1, ww, n))
        for p in (self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias):
            nn.init.trunc_normal_(p, std=0.02)

    def position_biases(self, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        """B1 (1, m, n, H·W) (agent -> key) and B2 (1, m, H·W, n) (query -> agent) for an H×W map."""
        m, n, N = self.config.num_heads, self.config.agent_num, H * W
        an = F.interpolate(self.an_bias, size=(H, W), mode="bilinear").reshape(1, m, n, N)
        ah, aw = resize_axis(self.ah_bias, 3, H), resize_axis(self.aw_bias, 4, W)
        b1 = an + (ah + aw).reshape(1, m, n, N)
        na = F.interpolate(self.na_bias, size=(H, W), mode="bilinear").reshape(1, m, n, N).transpose(-1, -2)
        ha, wa = resize_axis(self.ha_bias, 2, H), resize_axis(self.wa_bias, 3, W)
        b2 = na + (ha + wa).reshape(1, m, N, n)
        return b1, b2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        check_input(x, c.dim, self.name)
        B, H, W, C = x.shape
        N, m, d, n = H * W, c.num_heads, c.head_dim, c.agent_num
        with part("agent", "projections"):
            q, k, v = self.qkv(x.reshape(B, N, C)).chunk(3, dim=-1)  # each (B, N, C)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, m, L, d)
            return t.reshape(B, t.shape[1], m, d).transpose(1, 2)

        with part("agent", "offsets_sampling_rpe"):
            b1, b2 = self.position_biases(H, W)
        with part("agent", "attention"):
            # agents are pooled from q over all C channels, before the head split
            agents = self.pool(q.reshape(B, H, W, C).permute(0, 3, 1, 2)).reshape(B, C, n).transpose(1, 2)
            qh, kh, vh, ah = heads(q), heads(k), heads(v), heads(agents)
            agent_attn = torch.softmax((ah * self.scale) @ kh.transpose(-2, -1) + b1.to(q.dtype), dim=-1)
            agent_v = agent_attn @ vh  # (B, m, n, d)
            q_attn = torch.softmax((qh * self.scale) @ ah.transpose(-2, -1) + b2.to(q.dtype), dim=-1)
            if self._inspector is not None:
                self._inspector.record(self, "agent_maps", agent_attn=agent_attn, q_attn=q_attn, size=(H, W))
            out = (q_attn @ agent_v).transpose(1, 2).reshape(B, H, W, C)
        with part("agent", "lce"):
            out = out + self.dwc(v.reshape(B, H, W, C).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        with part("agent", "projections"):
            return self.proj(out)

    def cost(self, H: int, W: int) -> Cost:
        """Multiply-adds of one image at H×W, by part, counted as fvcore counts the official module.

        * projections: ``qkv`` and ``proj``, 4·N·C² (biases not counted).
        * attention: A·kᵀ, S1·v, q·Aᵀ, S2·V_A, 4·n·N·C, plus the adaptive average pool that forms the agents,
          N·C (fvcore: one per input element).
        * offsets_sampling_rpe: bias interpolation at fvcore's 4 per output element: the two 7×7 → H×W resizes,
          8·m·n·N, always (as the official code); each row bias resized to H adds 4·m·n·H and each column bias
          resized to W adds 4·m·n·W, only when H (W) differs from ``window_size``.
        * lce: the 3×3 depthwise conv on v, 9·N·C.
        """
        c = self.config
        N, C, m, n = H * W, c.dim, c.num_heads, c.agent_num
        wh, ww = size_pair(c.window_size)
        rpe = 8 * m * n * N + (8 * m * n * H if H != wh else 0) + (8 * m * n * W if W != ww else 0)
        return Cost(
            macs={
                "projections": 4 * N * C * C,
                "attention": 4 * n * N * C + N * C,
                "offsets_sampling_rpe": rpe,
                "lce": 9 * N * C,
            },
            keys_per_query=n,
        )
