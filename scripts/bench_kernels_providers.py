"""Problems and implementations that ``scripts/bench_kernels.py`` compares.

Problems are DeBiFormer-S stages 1-3 (dims 64/128/256, heads dim/32, offset groups 1/2/4, RPE table sized for
q_size 56/28/14; BRA topk 1/4/16, DBRA topk 4/8/16) at 224² (n_win 7, 7×7 agents) and 512² (n_win 8, 16×16
agents), see docs/kernels.md and the DBRA spec §3.3. Three operations:

* ``bra``: routed attention of a region's tokens (nq = nk = tokens per region);
* ``dbra``: routed attention of a region's agents (nq = agents per region: 1 at 224², 4 at 512²);
* ``pixel``: DBRA's back attention, every pixel against all Ns agents with the bilinear RPE bias.

Providers: ``official`` (expanded-gather / materialised-bias computation of the released code), ``torch`` (the
lean torch path), ``triton`` (attentions.kernels), ``flex`` (FlexAttention: a block mask built from the routing
indices for ``bra``/``dbra``, a ``score_mod`` computing the bilinear bias for ``pixel``).
"""
from __future__ import annotations

import dataclasses

import torch

from attentions import deformable
from attentions.routing import routed_attention

OPS = ("bra", "dbra", "pixel")
PROVIDERS = ("official", "torch", "triton", "flex")
_DIMS, _GROUPS, _QSIZE = (64, 128, 256), (1, 2, 4), (56, 28, 14)
_BRA_TOPK, _DBRA_TOPK = (1, 4, 16), (4, 8, 16)
_OFFSET_KERNEL, _OFFSET_STRIDE = (9, 7, 5), (8, 4, 2)
_N_WIN = {224: 7, 512: 8}


@dataclasses.dataclass(frozen=True)
class Case:
    """One problem: an operation at one stage, input resolution and batch."""

    op: str
    res: int
    stage: int
    batch: int
    tiny: bool = False  # --smoke: a CPU-sized stand-in with the same structure
    routing: str = "uniform"  # routed ops: "uniform" (random distinct regions) or "skewed" (Zipf popularity)

    @property
    def geometry(self) -> dict:
        if self.tiny:  # 8×8 map, 2×2 regions of 16 tokens, 4×4 agents (4 per region), C = 32, 2 heads
            return dict(H=8, n_win=2, C=32, heads=2, groups=2, q_size=4, topk=2, Hk=4)
        s = self.stage - 1
        H = self.res // 4 >> s
        k, st = _OFFSET_KERNEL[s], _OFFSET_STRIDE[s]
        Hk = (H + 2 * (k // 2) - k) // st + 1
        topk = (_BRA_TOPK if self.op == "bra" else _DBRA_TOPK)[s]
        return dict(H=H, n_win=_N_WIN[self.res], C=_DIMS[s], heads=_DIMS[s] // 32, groups=_GROUPS[s],
                    q_size=_QSIZE[s], topk=topk, Hk=Hk)

    @property
    def input_batch(self) -> int:
        """The batch of the inputs: the label's, except that a tiny stand-in has one image."""
        return 1 if self.tiny else self.batch

    def describe(self) -> str:
        return self._describe() + (f" B={self.input_batch}" if self.input_batch != self.batch else "")

    def _describe(self) -> str:
        g = self.geometry
        P, n = g["n_win"] ** 2, (g["H"] // g["n_win"]) ** 2
        if self.op == "pixel":
            return f"HW={g['H']}² Ns={g['Hk']}² m={g['heads']} G={g['groups']}"
        nq = n if self.op == "bra" else (g["Hk"] // g["n_win"]) ** 2
        return f"P={P} nq={nq} nk={n} topk={g['topk']} C={g['C']}" + (" skewed" if self.routing == "skewed" else "")


ROUTINGS = ("uniform", "skewed")


def priority(case: Case) -> tuple:
    """Measurement order, most important first: the H100 targets' DBRA and pixel-to-agent rows (512², batch 64),
    then BRA at 512² batch 64, then 224² batch 64, then batch 1; uniform routing before skewed."""
    at_target = case.res == 512 and case.batch == 64
    group = (0 if case.op != "bra" else 1) if at_target else (2 if case.batch == 64 else 3)
    return group, case.routing != "uniform", -case.res, -case.batch, OPS.index(case.op), case.stage


def cases(resolutions, batches, stages, ops, tiny=False, routings=("uniform",)) -> list[Case]:
    """Problems in :func:`priority` order. The back attention has no routing, so it runs once (``uniform`` stands
    for "not routed")."""
    out = [Case(op, res, stage, b, tiny, r) for res in resolutions for b in batches for op in ops for stage in stages
           for r in (routings if op != "pixel" else ("uniform",))]
    return sorted(out, key=priority)


def routing_indices(B: int, P: int, topk: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """(B, P, topk) distinct routed regions per query region. ``uniform``: a random top-k. ``skewed``: regions
    have Zipf popularity (weight 1/rank, a random rank order per image) and each query region draws its top-k
    without replacement by popularity, so a few key regions are picked by most query regions and many by none,
    as trained routers do (content-similar regions share their favourite key regions)."""
    if kind == "uniform":
        return torch.rand(B, P, P, generator=gen).topk(topk, dim=-1).indices
    if kind != "skewed":
        raise ValueError(f"routing must be one of {ROUTINGS}, got {kind!r}")
    rank = torch.argsort(torch.rand(B, P, generator=gen), dim=-1).float()
    weight = (1.0 / (rank + 1.0))[:, None, :].expand(B, P, P).reshape(B * P, P)
    return torch.multinomial(weight, topk, replacement=False, generator=gen).view(B, P, topk)


def make_inputs(case: Case, dtype, device, seed=0) -> dict:
    """Random inputs of one problem (idx: random distinct routed regions per query region)."""
    g = case.geometry
    gen = torch.Generator().manual_seed(seed)
    B, C, m = case.input_batch, g["C"], g["heads"]

    def rand(*shape, dt=dtype):
        return torch.randn(*shape, generator=gen).to(device, dt)

    if case.op == "pixel":
        Ns, N, d = g["Hk"] ** 2, g["H"] ** 2, C // m
        T = 2 * g["q_size"] - 1
        pos = (torch.rand(B * g["groups"], Ns, 2, generator=gen) * 2 - 1).to(device)
        return dict(q=rand(B * m, N, d), k=rand(B * m, Ns, d), v=rand(B * m, Ns, d), pos=pos,
                    rpe_table=rand(m, T, T) * 0.1, n_groups=g["groups"], H=g["H"], W=g["H"], scale=C**-0.5)
    P = g["n_win"] ** 2
    nk = (g["H"] // g["n_win"]) ** 2
    nq = nk if case.op == "bra" else (g["Hk"] // g["n_win"]) ** 2
    idx = routing_indices(B, P, g["topk"], case.routing, gen).to(device)
    return dict(q=rand(B, P, nq, C), k=rand(B, P, nk, C), v=rand(B, P, nk, C), idx=idx, num_heads=m,
                scale=C**-0.5)


def grad_inputs(case: Case) -> tuple[str, ...]:
    return ("q", "k", "v", "pos", "rpe_table") if case.op == "pixel" else ("q", "k", "v")


# -- implementations -------------------------------------------------------------------------------------------------


def provider_fn(case: Case, provider: str, compiled_flex: bool):
    """A callable taking the input dict, or raise NotImplementedError with the reason."""
    if case.op == "pixel":
        if provider == "official":
            return lambda a: deformable.pixel_to_agent_attention_torch(**a)
        if provider == "torch":
            lean = getattr(deformable, "pixel_to_agent_attention_lean", None)
            if lean is None:
                raise NotImplementedError("no lean torch back attention in attentions.deformable")
            return lambda a: lean(**a)
        if provider == "triton":
            from attentions.kernels import pixel_agent_attention_triton
            return lambda a: pixel_agent_attention_triton(**a)
        if provider == "flex":
            return lambda a: flex_pixel_agent(**a, flex=_flex(compiled_flex))
    else:
        if provider in ("official", "torch"):
            return lambda a: routed_attention(**a, impl=provider)
        if provider == "triton":
            from attentions.kernels import routed_attention_triton
            return lambda a: routed_attention_triton(**a)
        if provider == "flex":
            return lambda a: flex_routed_attention(**a, flex=_flex(compiled_flex))  # a may carry block_mask
    raise NotImplementedError(f"unknown provider {provider!r}")


_FLEX = {}


def _flex(compiled: bool):
    if compiled not in _FLEX:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX[compiled] = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    return _FLEX[compiled]


def aligned_block(n: int) -> int:
    """Flex's block size along an axis of n-token regions: 128 where regions hold a multiple of 128 tokens, the
    region itself where it is a power of two ≥ 16 (blocks never straddle regions: every tile is one region pair,
    skipped or full, and Flex does exactly the routed work), else 16 (DBRA's 1-4 agents per region, BRA's
    4-token stage-3 regions: Flex tiles must be ≥ 16 tokens, so a tile spans several regions and is partial)."""
    if n % 128 == 0:
        return 128
    if n >= 16 and n & (n - 1) == 0:
        return n
    return 16


def flex_kernel_options(q_block: int, kv_block: int) -> dict | None:
    """Flex tiles that divide the block mask's blocks (required below 128; torch ≥ 2.12 shrinks them itself):
    forward BLOCK_M | q_block, BLOCK_N | kv_block; backward BLOCK_N1 % BLOCK_M1 == BLOCK_M2 % BLOCK_N2 == 0."""
    if q_block >= 128 and kv_block >= 128:
        return None
    small = min(32, q_block, kv_block)
    return dict(BLOCK_M=min(64, q_block), BLOCK_N=min(64, kv_block), BLOCK_M1=small, BLOCK_N1=min(64, kv_block),
                BLOCK_M2=min(64, q_block), BLOCK_N2=small)


def routing_block_mask(idx: torch.Tensor, nq: int, nk: int, block=128):
    """FlexAttention BlockMask for region-major tokens: query token t attends to key token u iff region u // nk
    is among the routed regions of region t // nq. ``block``: an int or (q_block, kv_block).

    Built at region level in O(B·P²): a tile is skipped if no query region in it routes to a key region in it,
    "full" if every pair is routed (no mask_mod call), partial otherwise. With region-aligned blocks
    (:func:`aligned_block`) every tile is one region pair or a part of one, so tiles are skipped or full; with
    tiles spanning several query regions whose routed sets differ (small regions) nearly every tile is partial.
    All heads share the routing.
    """
    from torch.nn.attention.flex_attention import BlockMask

    qb, kb = (block, block) if isinstance(block, int) else block
    B, P, _ = idx.shape
    Lq, Lk = P * nq, P * nk
    nqb, nkb = -(-Lq // qb), -(-Lk // kb)
    route = torch.zeros(B, P, P, device=idx.device)
    route.scatter_(2, idx, 1.0)
    tok_q = torch.arange(nqb * qb, device=idx.device)
    tok_k = torch.arange(nkb * kb, device=idx.device)
    # cover[i, r]: tile i holds a token of region r (padding tokens past L hold none)
    cover_q = torch.zeros(nqb, P, device=idx.device).index_put_(
        ((tok_q // qb)[tok_q < Lq], (tok_q // nq)[tok_q < Lq]), torch.tensor(1.0, device=idx.device))
    cover_k = torch.zeros(nkb, P, device=idx.device).index_put_(
        ((tok_k // kb)[tok_k < Lk], (tok_k // nk)[tok_k < Lk]), torch.tensor(1.0, device=idx.device))
    routed_pairs = cover_q @ route @ cover_k.T  # (B, nqb, nkb) routed region pairs per tile
    all_pairs = cover_q.sum(1)[:, None] * cover_k.sum(1)[None, :]
    ragged = torch.zeros(nqb, nkb, dtype=torch.bool, device=idx.device)  # tiles holding padding stay partial
    ragged[-1, :] |= Lq % qb != 0
    ragged[:, -1] |= Lk % kb != 0
    full = (routed_pairs == all_pairs) & ~ragged & (routed_pairs > 0)
    partial = (routed_pairs > 0) & ~full

    def lists(sel):
        order = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return sel.sum(-1).to(torch.int32)[:, None], order[:, None]  # heads dimension 1: broadcast

    route_b = route.bool()

    def mask_mod(b, h, q_idx, kv_idx):
        return route_b[b, torch.clamp(q_idx // nq, max=P - 1), torch.clamp(kv_idx // nk, max=P - 1)]

    num, ind = lists(partial)
    fnum, find = lists(full)
    return BlockMask.from_kv_blocks(num, ind, fnum, find, BLOCK_SIZE=(qb, kb), mask_mod=mask_mod,
                                    seq_lengths=(Lq, Lk))


def flex_routed_attention(q, k, v, idx, num_heads, scale, flex, block_mask=None, kernel_options=None):
    """Routed attention through FlexAttention on region-major tokens, heads split head-major like the kernel.
    Without ``block_mask`` one is built with region-aligned blocks (the benchmark builds it outside the timing)."""
    B, P, nq, C = q.shape
    nk, d = k.shape[2], C // num_heads
    if block_mask is None:
        block = (aligned_block(nq), aligned_block(nk))
        block_mask, kernel_options = routing_block_mask(idx, nq, nk, block), flex_kernel_options(*block)
    qh = q.reshape(B, P * nq, num_heads, d).transpose(1, 2)
    kh = k.reshape(B, P * nk, num_heads, d).transpose(1, 2)
    vh = v.reshape(B, P * nk, num_heads, d).transpose(1, 2)
    out = flex(qh, kh, vh, block_mask=block_mask, scale=scale, kernel_options=kernel_options)
    return out.transpose(1, 2).reshape(B, P, nq, C)


def flex_pixel_agent(q, k, v, pos, rpe_table, n_groups, H, W, scale, flex):
    """Back attention through FlexAttention: a score_mod adds the bilinear RPE bias (4 table taps per score)."""
    Z, N, d = q.shape
    m, Th, Tw = rpe_table.shape
    B, Ns = Z // m, k.shape[1]
    sy, sx = (2.0 / (H - 1) if H > 1 else 0.0), (2.0 / (W - 1) if W > 1 else 0.0)
    oy, ox = (-1.0 if H > 1 else 0.0), (-1.0 if W > 1 else 0.0)
    heads_per_group = m // n_groups

    def score_mod(score, b, h, q_idx, kv_idx):
        row = b * n_groups + h // heads_per_group
        iy = (((q_idx // W) * sy + oy - pos[row, kv_idx, 0]) * 0.5 + 1.0) * 0.5 * (Th - 1)
        ix = (((q_idx % W) * sx + ox - pos[row, kv_idx, 1]) * 0.5 + 1.0) * 0.5 * (Tw - 1)
        y0, x0 = torch.floor(iy), torch.floor(ix)
        fy, fx = iy - y0, ix - x0
        y0, x0 = y0.to(torch.int64), x0.to(torch.int64)

        def tap(yy, xx):
            inside = (yy >= 0) & (yy < Th) & (xx >= 0) & (xx < Tw)
            val = rpe_table[h, torch.clamp(yy, 0, Th - 1), torch.clamp(xx, 0, Tw - 1)].to(torch.float32)
            return val * inside

        bias = ((1 - fy) * ((1 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
                + fy * ((1 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
        return score + bias

    out = flex(q.view(B, m, N, d), k.view(B, m, Ns, d), v.view(B, m, Ns, d), score_mod=score_mod, scale=scale)
    return out.reshape(Z, N, d)


def flex_mask_inputs(case: Case, inputs: dict) -> dict:
    """The Flex provider's inputs: the routed inputs plus a block mask (region-aligned blocks) and matching
    kernel options, built once here so that Flex's timings exclude it (the benchmark times it separately)."""
    if case.op == "pixel":
        return inputs
    nq, nk = inputs["q"].shape[2], inputs["k"].shape[2]
    block = (aligned_block(nq), aligned_block(nk))
    return dict(inputs, block_mask=routing_block_mask(inputs["idx"], nq, nk, block),
                kernel_options=flex_kernel_options(*block))


def flops(case: Case, inputs: dict) -> tuple[int, int]:
    """(forward, forward+backward) FLOPs, torch's convention (2 per MAC; backward 2.5× forward, docs/kernels.md)."""
    from attentions.kernels import pixel_agent_attention_macs, routed_attention_macs

    if case.op == "pixel":
        macs = pixel_agent_attention_macs(inputs["q"].shape, inputs["k"].shape)
    else:
        macs = routed_attention_macs(inputs["q"].shape, inputs["k"].shape, inputs["idx"].shape)
    return 2 * macs, 2 * macs + 5 * macs


def io_bytes(case: Case, inputs: dict) -> tuple[int, int]:
    """(forward, forward+backward) bytes that must cross memory at least once: each input read once, each
    output written once (the backward reads inputs, out and dout, and writes one gradient per input)."""
    tensors = [inputs[n] for n in grad_inputs(case)]
    size = sum(t.numel() * t.element_size() for t in tensors)
    out = inputs["q"].numel() * inputs["q"].element_size()
    fwd = size + out
    return fwd, fwd + (size + 2 * out) + size


def reference(case: Case, inputs: dict, dout: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """float32 forward and gradients (for ``dout``) of the lean torch path (official where there is none): the
    max-error and gradient-error columns."""
    names = grad_inputs(case)
    f32 = {n: (t.detach().float() if torch.is_tensor(t) and t.is_floating_point() else t) for n, t in inputs.items()}
    for n in names:
        f32[n].requires_grad_()
    if case.op == "pixel":
        fn = getattr(deformable, "pixel_to_agent_attention_lean", deformable.pixel_to_agent_attention_torch)
        out = fn(**f32)
    else:
        out = routed_attention(**f32, impl="torch")
    grads = torch.autograd.grad(out, [f32[n] for n in names], dout.float())
    return out.detach(), dict(zip(names, grads))
