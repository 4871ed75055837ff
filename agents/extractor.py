"""A graph policy for the padded DAG observation of ``persona/Restore-v0``.

:class:`GraphExtractor` (an SB3 features extractor) embeds every component together with the
host/progress globals, then runs ``layers`` blocks of

* message passing along the hard-dependency adjacency (mean over parents, mean over children),
* masked multi-head self-attention over all real components (so a process can learn which
  *roles* it should wait for: the hidden soft dependencies are keyed on roles, not edges),

and pools the result (masked mean and max) into a context vector. Its output is the flat
concatenation ``[node embeddings (N*D) | context (C)]``.

:class:`GraphPolicy` (a :class:`~sb3_contrib.common.maskable.policies.MaskableActorCriticPolicy`)
keeps SB3's rollout/training loops and only swaps the heads: action ``i * L + l`` gets its
logit from component ``i``'s embedding (a pointer head, so the policy is the same function
for every padding size and component order), the wait action and the value from the context.

With ``alloc_head`` the network also gets the allocation arithmetic in closed form: for every
component and level, :func:`alloc_features` computes the cores the level would take, the
host's free cores left after it, and what is left after every other pending process has
started too (at each level), with their signs; they join each component's part of the output
and the pointer head scores ``component x level`` from the embedding *and* these numbers.
(A DAgger diagnosis found the student's worst decisions at allocation cliffs - one level too
high starves a later process, one too low fails validation - which an MLP must otherwise
carve out of ``peak_frac`` and ``alloc_frac`` itself. Measured: no gain - a student with it
and one without, distilled alike, were 1.145x and 1.142x the oracle; docs/learning.md.)

Everything is plain matmuls, softmax and layer norms with additive masks - no
``nn.MultiheadAttention`` key-padding paths - so the network exports to ONNX (opset 17) and
runs identically under onnxruntime.
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from envs import layout
from envs.sim.params import SimConfig

NEG = -1e9  # additive mask for attention scores and max-pooling (finite: ONNX-safe)
_PEAK, _PROC = layout.COL["peak_frac"], layout.COL["kind_process"]
_PENDING, _ALLOC = layout.COL["pending"], layout.GCOL["alloc_frac"]


def alloc_feature_count(levels: int) -> int:
    return 4 + levels


def alloc_features(
    nodes: th.Tensor, globals_: th.Tensor, node_mask: th.Tensor, mult: th.Tensor
) -> th.Tensor:
    """(B, N, L, 4 + L) allocation arithmetic, in host-core fractions: for component ``i`` at
    level ``l``, the cores it takes (``peak x mult[l]``; 0 for non-processes), the free cores
    left after it, then what is left after every *other* pending process also starts at level
    ``k`` (one per ``k``), and the signs (>= 0) of the first two leftovers."""
    peak = nodes[..., _PEAK] * nodes[..., _PROC] * node_mask  # (B, N)
    pending = peak * nodes[..., _PENDING]
    others = pending.sum(-1, keepdim=True) - pending  # (B, N)
    free = (1.0 - globals_[..., _ALLOC]).reshape(-1, 1, 1)  # (B, 1, 1)
    need = peak.unsqueeze(-1) * mult  # (B, N, L)
    left = free - need
    after = left.unsqueeze(-1) - (others.unsqueeze(-1) * mult).unsqueeze(-2)  # (B, N, L, L)
    signs = th.stack([left, after[..., 0]], dim=-1) >= 0.0
    return th.cat([need.unsqueeze(-1), left.unsqueeze(-1), after, signs.float()], dim=-1)


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.ReLU(), nn.Linear(h, o))


class GraphBlock(nn.Module):
    """One round of dependency message passing + masked self-attention, pre-norm residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.heads, self.dk = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.msg = _mlp(3 * dim, 2 * dim, dim)

    def forward(self, h: th.Tensor, adj: th.Tensor, key_bias: th.Tensor) -> th.Tensor:
        b, n, d = h.shape
        x = self.norm1(h)
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.dk).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = q @ k.transpose(-1, -2) * (self.dk**-0.5) + key_bias  # (b, H, n, n)
        att = th.softmax(scores, dim=-1) @ v  # (b, H, n, dk)
        h = h + self.out(att.transpose(1, 2).reshape(b, n, d))
        x = self.norm2(h)
        # adj[i, j] = 1: i depends on j. parents of i: row i; children of i: column i
        par = adj @ x / adj.sum(-1, keepdim=True).clamp(min=1.0)
        adj_t = adj.transpose(1, 2)
        chi = adj_t @ x / adj_t.sum(-1, keepdim=True).clamp(min=1.0)
        return h + self.msg(th.cat([x, par, chi], dim=-1))


class GraphExtractor(BaseFeaturesExtractor):
    """Node embeddings + pooled context from ``{nodes, adjacency, node_mask, globals}``."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        dim: int = 64,
        heads: int = 4,
        layers: int = 2,
        alloc_head: bool = False,
    ) -> None:
        nodes = observation_space["nodes"].shape
        globs = observation_space["globals"].shape
        assert nodes is not None and globs is not None
        n, f = int(nodes[0]), int(nodes[1])
        g = int(globs[0])
        mult = SimConfig().alloc_levels  # the levels the env, the safe mask and export use
        self.levels = len(mult)
        self.n_alloc = alloc_feature_count(self.levels) if alloc_head else 0
        self.width = dim + self.levels * self.n_alloc  # per component in the output
        super().__init__(observation_space, features_dim=n * self.width + 2 * dim)
        self.n, self.dim, self.alloc_head = n, dim, alloc_head
        if alloc_head:
            self.register_buffer("mult", th.tensor(mult, dtype=th.float32))
        self.embed = _mlp(f + g, dim, dim)
        self.blocks = nn.ModuleList(GraphBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.glob = _mlp(g, dim, dim)
        self.ctx = _mlp(3 * dim, 2 * dim, 2 * dim)
        self.node_out = _mlp(dim + 2 * dim, dim, dim)

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        nodes, adj, mask, g = obs["nodes"], obs["adjacency"], obs["node_mask"], obs["globals"]
        b, n, _ = nodes.shape
        m = mask.unsqueeze(-1)  # (b, n, 1)
        h = self.embed(th.cat([nodes, g.unsqueeze(1).expand(b, n, g.shape[-1])], dim=-1))
        key_bias = ((1.0 - mask) * NEG).reshape(b, 1, 1, n)
        for blk in self.blocks:
            h = blk(h, adj, key_bias)
        h = self.norm(h) * m
        mean = h.sum(1) / m.sum(1).clamp(min=1.0)
        mx = (h + (1.0 - m) * NEG).max(dim=1).values
        ctx = self.ctx(th.cat([mean, mx, self.glob(g)], dim=-1))  # (b, 2D)
        node = self.node_out(th.cat([h, ctx.unsqueeze(1).expand(b, n, ctx.shape[-1])], dim=-1))
        if self.alloc_head:
            a = alloc_features(nodes, g, mask, self.get_buffer("mult")).reshape(b, n, -1)
            node = th.cat([node, a], dim=-1)
        return th.cat([(node * m).reshape(b, n * self.width), ctx], dim=-1)


class PointerHead(nn.Module):
    """Logits ``[node 0 level 0, ..., node N-1 level L-1, wait]`` from the extractor output
    (with ``n_alloc`` allocation features per level: an MLP scores each component x level
    from the embedding, those features and the level's one-hot, on top of the linear part)."""

    level: nn.Module

    def __init__(self, n: int, dim: int, levels: int, n_alloc: int = 0) -> None:
        super().__init__()
        self.n, self.dim, self.levels, self.n_alloc = n, dim, levels, n_alloc
        self.width = dim + levels * n_alloc
        node_lin, wait_lin = nn.Linear(dim, levels), nn.Linear(2 * dim, 1)
        self.node = nn.Sequential(nn.ReLU(), node_lin)
        self.wait = nn.Sequential(nn.ReLU(), wait_lin)
        lins = [node_lin, wait_lin]
        if n_alloc:
            out = nn.Linear(dim, 1)
            self.level = nn.Sequential(nn.Linear(dim + n_alloc + levels, dim), nn.ReLU(), out)
            self.register_buffer("onehot", th.eye(levels))
            lins.append(out)
        for lin in lins:
            nn.init.orthogonal_(lin.weight, gain=0.01)
            nn.init.zeros_(lin.bias)

    def forward(self, latent: th.Tensor) -> th.Tensor:
        b = latent.shape[0]
        part = latent[:, : self.n * self.width].reshape(b, self.n, self.width)
        nodes = part[..., : self.dim]
        ctx = latent[:, self.n * self.width :]
        logits = self.node(nodes)  # (B, N, L)
        if self.n_alloc:
            a = part[..., self.dim :].reshape(b, self.n, self.levels, self.n_alloc)
            emb = th.relu(nodes).unsqueeze(2).expand(b, self.n, self.levels, self.dim)
            hot = self.get_buffer("onehot").expand(b, self.n, self.levels, self.levels)
            logits = logits + self.level(th.cat([emb, a, hot], dim=-1)).squeeze(-1)
        return th.cat([logits.reshape(b, -1), self.wait(ctx)], dim=-1)


class ContextValue(nn.Module):
    """State value from the pooled context part of the extractor output."""

    def __init__(self, n: int, dim: int, width: int | None = None) -> None:
        super().__init__()
        self.start = n * (width or dim)
        self.net = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, latent: th.Tensor) -> th.Tensor:
        out: th.Tensor = self.net(latent[:, self.start :])
        return out


class GraphPolicy(MaskableActorCriticPolicy):
    """MaskablePPO policy: :class:`GraphExtractor` + pointer action head + context value head."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("features_extractor_class", GraphExtractor)
        kwargs.setdefault("net_arch", [])  # the extractor output goes straight to the heads
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        fe = self.features_extractor
        assert isinstance(fe, GraphExtractor), "GraphPolicy needs GraphExtractor"
        assert isinstance(self.action_space, spaces.Discrete)
        n_actions = int(self.action_space.n)
        levels, rest = divmod(n_actions - 1, fe.n)
        if rest:
            raise ValueError(f"action space {n_actions} is not N*levels+1 for N={fe.n}")
        if fe.n_alloc and levels != fe.levels:
            raise ValueError(f"alloc_head: the env has {levels} levels, the extractor {fe.levels}")
        self.action_net = PointerHead(fe.n, fe.dim, levels, fe.n_alloc)
        self.value_net = ContextValue(fe.n, fe.dim, fe.width)  # type: ignore[assignment]
        # the heads changed: the optimizer must own their parameters
        self.optimizer = self.optimizer_class(
            self.parameters(),
            lr=lr_schedule(1),  # type: ignore[call-arg]
            **self.optimizer_kwargs,
        )
