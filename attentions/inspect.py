"""See what an attention computed: routing, sampling points, agent maps and the attention of a chosen query.

Every paper of this family explains its mechanism with such pictures (BiFormer Fig. 1/6, DAT Fig. 1/5, Agent
Attention Fig. 3, DeBiFormer Fig. 1/5); this module records the numbers behind them, per forward call::

    import attentions
    with attentions.inspect(model, query=(0.5, 0.5)) as rec:       # a module, or a model holding several
        model(x)
    for r in rec.records:                                          # one Record per attention call
        r.module, r.mechanism, r.grid, r.query_pixel, r.data["query_map"]   # (B, heads, H, W)

Zero cost when not inspecting: every zoo module carries the class attribute ``_inspector = None`` and its
recording points are ``if self._inspector is not None: ...``; :func:`inspect` sets the instance attribute for the
duration of the ``with`` block and deletes it afterwards. Recording never changes a module's output: it reads the
tensors the forward already computed and recomputes what it needs (softmax rows, routing logits) on the side,
without gradients, so outputs are bit-identical with and without inspection (tested for all five).

``query`` is a point of the token grid as fractions (y, x) of its height and width, so the same image point is
chosen at every stage: token (min(⌊y·H⌋, H−1), min(⌊x·W⌋, W−1)).

What a record's ``data`` holds (tensors detached, float32, on the CPU; B = batch, m = heads, G = offset groups):

========== ==========================================================================================================
all        ``query_map`` (B, m, H, W): the weight each input token gets in the chosen query's output, through the
           value path (exact for mhsa, bra, agent and dat with one offset group; dat with G groups: the mean over the
           groups' sampling positions, each of which carries one channel group; for dbra the two hops pixel → agents → routed pixels,
           leaving out the agents' residual FFN, LayerNorm and sampled-input residual).
bra, dbra  ``n_win``; ``routing_logits`` (B, P, P) region affinities (q_r·scale)k_rᵀ; ``routing_index`` and
           ``routing_scores`` (B, P, topk), best first; ``query_grid`` (the grid whose regions route: the pixels
           for bra, the agent grid for dbra) and ``key_grid``.
dat, dbra  ``reference`` and ``positions`` (B, G, Hk, Wk, 2) in grid_sample's normalised (y, x), align_corners;
           ``offsets`` = positions − reference (after range scaling and clamping: where the points really are).
dat        ``sample_weights`` (B, m, H·W, Hk·Wk): each query's softmax over the sampled keys.
dbra       ``agent_to_pixel`` (B, m, Hg·Wg, H·W): each agent's routed attention over the pixels;
           ``pixel_to_agent`` (B, m, H·W, Hg·Wg): each pixel's attention over the agents (RPE bias included).
agent      ``agent_centres`` (n, 2) (y, x) in token units (the adaptive-pool cells the agents average);
           ``agent_to_pixel`` (B, m, n, H·W) and ``pixel_to_agent`` (B, m, H·W, n).
========== ==========================================================================================================
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .deformable import align_corners_grid, rpe_bias
from .routing import region_partition

__all__ = ["inspect", "Recorder", "Record", "splat", "query_token", "recordable"]


@dataclasses.dataclass
class Record:
    """What one call of one attention module computed.

    Attributes:
        module: the module's qualified name inside the inspected root ("" for the root itself).
        mechanism: its registry name (``bra``, ``dbra``, ``dat``, ``agent``, ``mhsa``).
        grid: (H, W) of the token grid the module was called on.
        query_pixel: (i, j), the chosen query token.
        data: the recorded tensors (see the module docstring).
    """

    module: str
    mechanism: str
    grid: tuple[int, int] = (0, 0)
    query_pixel: tuple[int, int] = (0, 0)
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


def query_token(query: tuple[float, float], H: int, W: int) -> tuple[int, int]:
    """The token (i, j) of an H×W grid at fractions ``query`` = (y, x) of its height and width."""
    fy, fx = query
    return min(max(int(fy * H), 0), H - 1), min(max(int(fx * W), 0), W - 1)


def recordable(module: nn.Module) -> bool:
    """Whether ``module`` has recording points (the zoo's five mechanisms)."""
    return hasattr(type(module), "_inspector") and getattr(type(module), "name", None) in _KINDS_BY_MECHANISM


class Recorder:
    """Collects one :class:`Record` per call of each inspected module; returned by :func:`inspect`."""

    def __init__(self, query: tuple[float, float] = (0.5, 0.5)) -> None:
        self.query = (float(query[0]), float(query[1]))
        self.records: list[Record] = []
        self._names: dict[int, str] = {}
        self._open: dict[int, Record] = {}

    # -- what users read ------------------------------------------------------------------------------------------
    def of(self, module: str | nn.Module) -> list[Record]:
        """The records of one module, by qualified name or by the module itself, in call order."""
        name = module if isinstance(module, str) else self._names.get(id(module))
        return [r for r in self.records if r.module == name]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    # -- what modules call ----------------------------------------------------------------------------------------
    def record(self, module: nn.Module, kind: str, **tensors: Any) -> None:
        """Called at a recording point of ``module``: derive and store the data of ``kind`` for the current call."""
        rec = self._open.get(id(module))
        if rec is None:  # called outside a forward (e.g. a helper method): a record of its own
            rec = self._begin(module)
        with torch.no_grad():
            rec.data.update(_KINDS[kind](module, rec, self.query, **tensors))

    # -- hooks ----------------------------------------------------------------------------------------------------
    def _begin(self, module: nn.Module) -> Record:
        rec = Record(self._names.get(id(module), ""), type(module).name)
        self._open[id(module)] = rec
        self.records.append(rec)
        return rec

    def _pre_hook(self, module: nn.Module, args) -> None:
        self._begin(module)

    def _post_hook(self, module: nn.Module, args, output) -> None:
        rec = self._open.pop(id(module), None)
        finish = _FINISH.get(rec.mechanism) if rec is not None else None
        if finish is not None:
            with torch.no_grad():
                rec.data.update(finish(rec))


@contextlib.contextmanager
def inspect(root: nn.Module, query: tuple[float, float] = (0.5, 0.5)) -> Iterator[Recorder]:
    """Record what every zoo attention inside ``root`` (``root`` itself included) computes while the block runs.

    Args:
        root: an attention module or any model holding some (e.g. a backbone of :mod:`attentions.models`).
        query: the query token as fractions (y, x) of the grid, for ``query_map`` and the query's routing.

    Yields:
        a :class:`Recorder`; its ``records`` fill as the modules run.

    Raises:
        ValueError: ``root`` holds no module with recording points, or is already being inspected.
    """
    rec = Recorder(query)
    targets = [(name, m) for name, m in root.named_modules() if recordable(m)]
    if not targets:
        raise ValueError(f"inspect: {type(root).__name__} holds none of the attentions that can be inspected "
                         f"({', '.join(sorted(_KINDS_BY_MECHANISM))})")
    if any(m.__dict__.get("_inspector") is not None for _, m in targets):
        raise ValueError("inspect: a module inside this root is already being inspected (nested inspect)")
    handles = []
    try:
        for name, m in targets:
            rec._names[id(m)] = name
            m._inspector = rec
            handles.append(m.register_forward_pre_hook(rec._pre_hook))
            handles.append(m.register_forward_hook(rec._post_hook))
        yield rec
    finally:
        for h in handles:
            h.remove()
        for _, m in targets:
            m.__dict__.pop("_inspector", None)  # back to the class attribute None


# -- helpers ----------------------------------------------------------------------------------------------------------

def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().cpu()


def _region_to_rowmajor(H: int, W: int, n_win: int, device) -> torch.Tensor:
    """perm with rowmajor_index = perm[region_major_index] for an H×W grid cut into n_win² regions."""
    ids = torch.arange(H * W, device=device).view(1, H, W, 1)
    return region_partition(ids, n_win).reshape(-1)


def _routed_weights(q: torch.Tensor, k: torch.Tensor, idx: torch.Tensor, num_heads: int, scale: float,
                    H: int, W: int, n_win: int) -> torch.Tensor:
    """Softmax weights of region-grouped queries over their routed keys, scattered onto the full key grid.

    Args:
        q: (B, Pq, nq, C) queries by region (Pq may be a subset); k: (B, P, nk, C) keys by region of an H×W grid;
        idx: (B, Pq, topk) routed regions.
    Returns:
        (B, m, Pq·nq, H·W), zero outside the routed regions; keys in row-major order of the H×W grid.
    """
    B, Pq, nq, C = q.shape
    P, nk, topk, m = k.shape[1], k.shape[2], idx.shape[-1], num_heads
    d = C // m
    kg = k[torch.arange(B, device=k.device).view(B, 1, 1), idx].reshape(B, Pq, topk * nk, m, d).permute(0, 1, 3, 2, 4)  # (B, Pq, m, k·nk, d)
    qh = q.view(B, Pq, nq, m, d).permute(0, 1, 3, 2, 4)  # (B, Pq, m, nq, d)
    probs = torch.softmax((qh * scale) @ kg.transpose(-2, -1), dim=-1).view(B, Pq, m, nq, topk, nk)
    dense = q.new_zeros(B, Pq, m, nq, P, nk)
    dense.scatter_(4, idx.view(B, Pq, 1, 1, topk, 1).expand(B, Pq, m, nq, topk, nk), probs)
    dense = dense.reshape(B, Pq, m, nq, P * nk)
    out = torch.empty_like(dense)
    out[..., _region_to_rowmajor(H, W, n_win, q.device)] = dense
    return out.permute(0, 2, 1, 3, 4).reshape(B, m, Pq * nq, H * W)


def splat(pos: torch.Tensor, weights: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The weight each token of an H×W grid gets when values are sampled bilinearly at ``pos`` and weighted.

    ``pos`` (N, S, 2) normalised (y, x) as :func:`attentions.deformable.sample_at` samples (align_corners,
    zero padding), ``weights`` (N, S) -> (N, H, W): the adjoint of that sampling, taken from autograd so that it
    is exactly the sampling the modules do.
    """
    N, S, _ = pos.shape
    with torch.enable_grad():
        grid = torch.zeros(N, 1, H, W, dtype=weights.dtype, device=weights.device, requires_grad=True)
        sampled = F.grid_sample(grid, pos[..., (1, 0)].to(weights.dtype).view(N, 1, S, 2), mode="bilinear",
                                padding_mode="zeros", align_corners=True)  # (N, 1, 1, S)
        (g,) = torch.autograd.grad((sampled.view(N, S) * weights).sum(), grid)
    return g.view(N, H, W)


def _routing_data(module, q, k, idx, query_grid, key_grid) -> dict[str, Any]:
    logits = (q.mean(2) * module.scale) @ k.mean(2).transpose(-2, -1)  # as route_topk: the region affinities
    return {"n_win": module.config.n_win, "routing_logits": _cpu(logits), "routing_index": idx.detach().cpu(),
            "routing_scores": _cpu(logits.gather(-1, idx)), "query_grid": tuple(query_grid),
            "key_grid": tuple(key_grid)}


# -- one function per recording point: (module, record, query, **tensors) -> data ---------------------------------------

def _bra_routing(module, rec: Record, query, *, q, k, idx, size, padded) -> dict[str, Any]:
    """BRA: q, k (B, P, n, C) by region of the padded grid ``padded``; ``size`` the input (H, W)."""
    H, W = padded
    n, m = module.config.n_win, module.config.num_heads
    rec.grid = tuple(size)
    i, j = rec.query_pixel = query_token(query, *size)
    h, w = H // n, W // n
    r, t = (i // h) * n + j // w, (i % h) * w + j % w
    row = _routed_weights(q[:, r:r + 1, t:t + 1], k, idx[:, r:r + 1], m, module.scale, H, W, n)  # (B, m, 1, HW)
    qmap = row.view(-1, m, H, W)[:, :, : size[0], : size[1]]
    return {**_routing_data(module, q, k, idx, padded, padded), "query_map": _cpu(qmap), "query_region": r}


def _dbra_positions(module, rec: Record, query, *, ref, offset, pos) -> dict[str, Any]:
    """DBRA: reference grid (Hk, Wk, 2), raw offsets (B·G, Hk, Wk, c) and clamped positions (B·G, Hk, Wk, 2)."""
    G = module.config.n_groups
    pos = _cpu(pos)
    B = pos.shape[0] // G
    ref = _cpu(ref).expand_as(pos)
    return {"reference": ref.reshape(B, G, *pos.shape[1:]), "positions": pos.reshape(B, G, *pos.shape[1:]),
            "offsets": (pos - ref).reshape(B, G, *pos.shape[1:]),
            "raw_offsets": _cpu(offset).reshape(B, G, *offset.shape[1:])}


def _dbra_routing(module, rec: Record, query, *, qa, kw, idx, agent_grid, key_grid) -> dict[str, Any]:
    """DBRA's agent step: agents qa (B, P, na, C) route to the pixel keys kw (B, P, nk, C)."""
    H, W = key_grid
    c = module.config
    a2p = _routed_weights(qa, kw, idx, c.num_heads, module.scale, H, W, c.n_win)  # region-major agents
    Hg, Wg = agent_grid
    agents = _region_to_rowmajor(Hg, Wg, c.n_win, a2p.device)
    out = torch.empty_like(a2p)
    out[:, :, agents] = a2p
    return {**_routing_data(module, qa, kw, idx, agent_grid, key_grid), "agent_to_pixel": _cpu(out)}


def _dbra_back(module, rec: Record, query, *, q, agents, pos, size) -> dict[str, Any]:
    """DBRA's back attention: pixel queries q (B, C, H, W) against the refined agents (B, C, Hg, Wg)."""
    B, C, H, W = q.shape
    c = module.config
    m, d = c.num_heads, C // c.num_heads
    Ns = agents.shape[2] * agents.shape[3]
    qh = q.reshape(B * m, d, H * W).transpose(1, 2)
    kh = module.proj_k(agents).reshape(B * m, d, Ns).transpose(1, 2)
    bias = rpe_bias(module.rpe_table, align_corners_grid(H, W, q.device, pos.dtype).reshape(H * W, 2),
                    pos.reshape(-1, Ns, 2), c.n_groups)
    probs = torch.softmax((qh @ kh.transpose(1, 2)) * module.scale + bias.to(qh.dtype), dim=-1)
    rec.grid = tuple(size)
    rec.query_pixel = query_token(query, *size)
    return {"pixel_to_agent": _cpu(probs.view(B, m, H * W, Ns)), "padded_grid": (H, W)}


def _dbra_finish(rec: Record) -> dict[str, Any]:
    d = rec.data
    if "pixel_to_agent" not in d or "agent_to_pixel" not in d:
        return {}
    H, W = d["padded_grid"]
    i, j = rec.query_pixel
    row = d["pixel_to_agent"][:, :, i * W + j]  # (B, m, Ns)
    two_hop = (row.unsqueeze(2) @ d["agent_to_pixel"]).view(row.shape[0], row.shape[1], H, W)
    return {"query_map": two_hop[:, :, : rec.grid[0], : rec.grid[1]]}


def _dat_sampling(module, rec: Record, query, *, q, k, bias, ref, pos, size) -> dict[str, Any]:
    """DAT: q (B·m, HW, hc), k (B·m, Nk, hc), bias (B·m, HW, Nk), ref/pos (B·G, Hk, Wk, 2)."""
    c = module.config
    G, m = c.n_groups, c.num_heads
    H, W = size
    probs = torch.softmax(q @ k.transpose(-2, -1) * module.scale + bias.to(q.dtype), dim=-1)
    BG, Hk, Wk, _ = pos.shape
    B = BG // G
    rec.grid = (H, W)
    i, j = rec.query_pixel = query_token(query, H, W)
    row = probs.view(B, m, H * W, Hk * Wk)[:, :, i * W + j]  # (B, m, Nk)
    # key k of group g' holds channel group g' sampled at pos[g', k]: a head's weights reach the pixels through
    # every group's positions (proj_v mixes the groups), so the map averages the groups' splats (exact for G = 1)
    per_group = pos.view(B, G, 1, Hk * Wk, 2).expand(B, G, m, Hk * Wk, 2).reshape(B * G * m, Hk * Wk, 2)
    rows = row.unsqueeze(1).expand(B, G, m, Hk * Wk).reshape(B * G * m, -1)
    qmap = splat(per_group, rows, H, W).view(B, G, m, H, W).mean(1)
    pos, ref = _cpu(pos), _cpu(ref).expand_as(pos)
    shape = (B, G, Hk, Wk, 2)
    return {"reference": ref.reshape(shape), "positions": pos.reshape(shape), "offsets": (pos - ref).reshape(shape),
            "sample_weights": _cpu(probs.view(B, m, H * W, Hk * Wk)), "query_map": _cpu(qmap)}


def _agent_maps(module, rec: Record, query, *, agent_attn, q_attn, size) -> dict[str, Any]:
    """Agent attention: agent_attn (B, m, n, HW) agent → pixel, q_attn (B, m, HW, n) pixel → agent."""
    H, W = size
    n = agent_attn.shape[2]
    s = math.isqrt(n)
    rec.grid = (H, W)
    i, j = rec.query_pixel = query_token(query, H, W)

    def centres(L: int) -> torch.Tensor:  # AdaptiveAvgPool cell a spans [⌊aL/s⌋, ⌈(a+1)L/s⌉) tokens
        return torch.tensor([((a * L) // s + -(-((a + 1) * L) // s)) / 2 - 0.5 for a in range(s)])

    cy, cx = torch.meshgrid(centres(H), centres(W), indexing="ij")
    qmap = (q_attn[:, :, i * W + j].unsqueeze(2) @ agent_attn).view(q_attn.shape[0], q_attn.shape[1], H, W)
    return {"agent_centres": torch.stack([cy, cx], -1).reshape(n, 2), "agent_to_pixel": _cpu(agent_attn),
            "pixel_to_agent": _cpu(q_attn), "query_map": _cpu(qmap)}


def _mhsa_row(module, rec: Record, query, *, q, k, size) -> dict[str, Any]:
    """MHSA: q, k (B, m, N, d); the chosen query's softmax row over all N tokens."""
    H, W = size
    rec.grid = (H, W)
    i, j = rec.query_pixel = query_token(query, H, W)
    row = torch.softmax((q[:, :, i * W + j: i * W + j + 1] * module.scale) @ k.transpose(-2, -1), dim=-1)
    return {"query_map": _cpu(row.view(q.shape[0], q.shape[1], H, W))}


_KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "bra_routing": _bra_routing,
    "dbra_positions": _dbra_positions,
    "dbra_routing": _dbra_routing,
    "dbra_back": _dbra_back,
    "dat_sampling": _dat_sampling,
    "agent_maps": _agent_maps,
    "mhsa_row": _mhsa_row,
}
_KINDS_BY_MECHANISM = {"bra", "dbra", "dat", "agent", "mhsa"}
_FINISH: dict[str, Callable[[Record], dict[str, Any]]] = {"dbra": _dbra_finish}
