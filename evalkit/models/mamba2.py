"""Mamba-2 (SSD) language model in plain PyTorch, loading Codestral Mamba checkpoints.

Reads top to bottom: config -> norms -> the SSD as the paper writes it (`ssd_minimal`) -> the fast
chunked scan used for prefill (`ssd_scan`) -> causal conv -> mixer (prefill and single-token decode)
-> residual block -> cache -> language model -> loader.

Numerics follow the references (state-spaces/mamba, transformers' Mamba2): the scan, the SSM state,
the gated norm and the residual stream are float32 whatever the weight dtype; matmuls of the
projections run in the weight dtype.

Shapes: b batch, t time, h heads, p head dim, g groups, n state size, q chunk length, c chunks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evalkit.models.checkpoint import CheckpointError, load_weights, read_config, stored_dtype
from evalkit.models.logits import vocab_logits


@dataclass(frozen=True)
class Mamba2Config:
    d_model: int
    n_layers: int
    vocab_size: int
    d_state: int = 128
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    n_groups: int = 1
    chunk_size: int = 256
    norm_eps: float = 1e-5
    dt_min: float = 0.0
    dt_max: float = math.inf
    residual_in_fp32: bool = True
    conv_bias: bool = True
    proj_bias: bool = False
    tie_embeddings: bool = False

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def n_heads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """Channels through the causal conv: x, B and C."""
        return self.d_inner + 2 * self.n_groups * self.d_state

    def __post_init__(self) -> None:
        if self.d_inner % self.headdim:
            raise ValueError(f"d_inner {self.d_inner} is not a multiple of headdim {self.headdim}")
        if self.n_heads % self.n_groups:
            raise ValueError(f"{self.n_heads} heads cannot be split into {self.n_groups} groups")

    @classmethod
    def from_hf(cls, config: dict) -> Mamba2Config:
        """From a transformers `config.json` (Mamba2ForCausalLM); missing keys take its defaults."""
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (only silu)")
        dt_min, dt_max = config.get("time_step_limit", (0.0, math.inf))
        cfg = cls(
            d_model=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            vocab_size=config["vocab_size"],
            d_state=config.get("state_size", 128),
            d_conv=config.get("conv_kernel", 4),
            expand=config.get("expand", 2),
            headdim=config.get("head_dim", 64),
            n_groups=config.get("n_groups", 8),
            chunk_size=config.get("chunk_size", 256),
            norm_eps=config.get("layer_norm_epsilon", 1e-5),
            dt_min=float(dt_min),
            dt_max=float(dt_max),
            residual_in_fp32=config.get("residual_in_fp32", True),
            conv_bias=config.get("use_conv_bias", True),
            proj_bias=config.get("use_bias", False),
            tie_embeddings=config.get("tie_word_embeddings", False),
        )
        if "num_heads" in config and config["num_heads"] != cfg.n_heads:
            raise ValueError(
                f"num_heads {config['num_heads']} != expand*hidden_size/head_dim = {cfg.n_heads}"
            )
        return cfg

    @classmethod
    def from_native(cls, params: dict) -> Mamba2Config:
        """From a mistral-inference `params.json`, which leaves the mixer sizes at the Mamba-2 defaults.

        Missing top-level keys take mamba_ssm's MambaConfig defaults; an optional `ssm_cfg` overrides the
        mixer defaults (d_state, d_conv, expand, headdim, chunk_size, ngroups) as in mamba_ssm.
        """
        if not params.get("rms_norm", True):
            raise ValueError("rms_norm false (LayerNorm blocks) is not supported")
        ssm = params.get("ssm_cfg") or {}
        vocab = params["vocab_size"]
        multiple = params.get("pad_vocab_size_multiple", 8)
        if multiple > 1:
            vocab = -(-vocab // multiple) * multiple  # mamba_ssm pads the embedding rows
        return cls(
            d_model=params["dim"],
            n_layers=params["n_layers"],
            vocab_size=vocab,
            d_state=ssm.get("d_state", 128),
            d_conv=ssm.get("d_conv", 4),
            expand=ssm.get("expand", 2),
            headdim=ssm.get("headdim", 64),
            n_groups=params.get("n_groups", ssm.get("ngroups", 1)),
            chunk_size=ssm.get("chunk_size", 256),
            residual_in_fp32=params.get("residual_in_fp32", True),
            tie_embeddings=params.get("tie_embeddings", True),
        )


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (the residual stream's dtype); returns the weight's dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(self.weight.dtype)


class GatedRMSNorm(nn.Module):
    """y * silu(z), then RMS-normalised within each of `n_groups` channel groups (Codestral: 8).

    Gate first, then normalise, whatever config.json's `norm_before_gate` says: both references do.
    """

    def __init__(self, dim: int, n_groups: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.n_groups = n_groups
        self.eps = eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        gated = F.silu(z.float()).mul_(y.float())
        group_size = gated.shape[-1] // self.n_groups
        grouped = F.rms_norm(gated.unflatten(-1, (self.n_groups, group_size)), (group_size,), eps=self.eps)
        return grouped.flatten(-2).mul_(self.weight.float()).to(self.weight.dtype)


# ------------------------------------------------------------------------------ the SSD, as the paper writes it


def segsum(x: Tensor) -> Tensor:
    """(..., t) -> (..., t, t): out[..., i, j] = x[j+1] + ... + x[i] for j <= i (0 on the diagonal), -inf above.

    With x the log-decays of a chunk, exp(segsum(x))[i, j] is how much of step j's input survives at step i.
    """
    t = x.shape[-1]
    x = x[..., None].expand(*x.shape, t)  # x[..., i, j] = x[i]
    x = x.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(-1), 0.0)
    x = x.cumsum(dim=-2)
    return x.masked_fill(~torch.ones(t, t, dtype=torch.bool, device=x.device).tril(), -torch.inf)


def ssd_minimal(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The chunked SSD of the Mamba-2 paper's minimal listing (mamba_ssm ssd_minimal_discrete): the definition
    `ssd_scan` is tested against. Plain and slow: it materialises every (chunk x chunk) decay matrix per head.

    x (b,t,h,p), dt (b,t,h) after softplus, A (h) negative, B and C (b,t,g,n), t a multiple of chunk_size;
    state (b,h,p,n) before the first token, or None for zeros. Returns y (b,t,h,p) without the D skip and the
    state after the last token (b,h,p,n).
    """
    b, t, h, p = x.shape
    q, c, hg = chunk_size, t // chunk_size, h // B.shape[2]
    X = (x * dt[..., None]).reshape(b, c, q, h, p)  # discretised input
    A = (A * dt).reshape(b, c, q, h).permute(0, 3, 1, 2)  # (b,h,c,q) discretised log-decays
    B = B.repeat_interleave(hg, dim=2).reshape(b, c, q, h, -1)  # head k reads group k // hg
    C = C.repeat_interleave(hg, dim=2).reshape(b, c, q, h, -1)
    A_cumsum = A.cumsum(dim=-1)

    # 1. Within each chunk (the diagonal blocks): a masked, decayed "attention" of C over B.
    L = torch.exp(segsum(A))
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, L, X)
    # 2. The state each chunk adds, decayed to the chunk's end.
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_states, X)
    # 3. The state entering each chunk: a recurrence over chunks, not tokens.
    initial = torch.zeros_like(states[:, :1]) if state is None else state[:, None]
    states = torch.cat([initial, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(A_cumsum[..., -1], (1, 0))))
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final_state = states[:, :-1], states[:, -1]
    # 4. What the entering state adds to each output (the off-diagonal blocks).
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(A_cumsum))
    return (Y_diag + Y_off).reshape(b, t, h, p), final_state


# ------------------------------------------------------------------------------ the SSD, fast

# The SSM state of a head is a (p, n) matrix; references keep a batch as (b, h, p, n). ssd_scan, the decode
# step and Mamba2Cache keep it as (b, g, n, hg*p) instead: per group, the states of its hg heads, transposed
# and side by side. The heads of a group share B and C, so the output C . state is one (1, n) @ (n, hg*p)
# matmul per group whose result is already in channel order, and the update adds one outer product
# B (n) x dt*x (hg*p) per group: no per-head expansion of B and C, no transposes per token.


def state_to_heads(state: Tensor, headdim: int) -> Tensor:
    """The cache layout (b, g, n, hg*p) -> the references' (b, h, p, n)."""
    b, g, n, hp = state.shape
    return state.view(b, g, n, hp // headdim, headdim).permute(0, 1, 3, 4, 2).reshape(b, -1, headdim, n)


def heads_to_state(heads: Tensor, n_groups: int) -> Tensor:
    """The references' (b, h, p, n) -> the cache layout (b, g, n, hg*p)."""
    b, h, p, n = heads.shape
    return heads.view(b, n_groups, h // n_groups, p, n).permute(0, 1, 4, 2, 3).reshape(b, n_groups, n, -1)


# Prefill chunk length on CPU. Work within a chunk grows with its length, work across chunks shrinks;
# on CPU 64 is fastest (about 1.3x the speed of Codestral's 256 at 2048 tokens). Other devices keep the
# checkpoint's chunk_size. Either way the results are the same.
CPU_CHUNK_SIZE = 64

# exp() of a decay below this is < 1e-26: zero next to any term that matters, and clamping there keeps
# the elementwise products out of the (very slow on CPU) denormal range.
_MIN_LOG_DECAY = -60.0


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """`ssd_minimal`'s algorithm, in float32, without its (q x q) matrices per head, in the cache layout.

    x (b,t,h,p), dt (b,t,h) after softplus, A (h) negative, B and C (b,t,g,n); any length t.
    state: the SSM state before the first token, or None for zeros, in the cache layout (b,g,n,hg*p).
    Returns y (b,t,h,p) without the D skip, and the state after the last token (b,g,n,hg*p).

    Differences from the minimal listing, all for speed: C.B scores per group (shared by its heads) and
    masked once; results written into preallocated buffers; the numbered steps fused per group. Padding
    with zeros to a multiple of the chunk length keeps the result exact: a padded step has dt = 0, so no
    decay (dt*A = 0) and no input (x*dt = 0).
    """
    b, t, h, p = x.shape
    g, n = B.shape[-2:]
    hg = h // g
    q = chunk_size
    pad = -t % q
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (t + pad) // q
    new = dict(dtype=x.dtype, device=x.device)

    dt = dt.view(b, c, q, h)
    A_cum = (dt * A).cumsum(2)  # (b,c,q,h): log-decay from the chunk start to each step
    B_c = B.view(b, c, q, g, n).transpose(2, 3)  # (b,c,g,q,n)
    C_c = C.view(b, c, q, g, n).transpose(2, 3)  # (b,c,g,q,n)

    # 1. Within chunks, per head: y_l = sum_{s<=l} (C_l . B_s) exp(Acum_l - Acum_s) dt_s x_s.
    x_dt = torch.empty(b, c, h, q, p, **new)
    torch.mul(x.view(b, c, q, h, p).transpose(2, 3), dt.transpose(2, 3).unsqueeze(-1), out=x_dt)
    scores = C_c @ B_c.transpose(-1, -2)  # (b,c,g,q,q), shared by the heads of a group
    # Causal: masked once per group, not per head.
    scores.masked_fill_(torch.ones(q, q, dtype=torch.bool, device=x.device).triu(1), 0.0)
    A_cum_h = A_cum.transpose(2, 3).contiguous()  # (b,c,h,q); contiguous, so `weights` is too
    weights = A_cum_h.unsqueeze(-1) - A_cum_h.unsqueeze(-2)  # (b,c,h,q,q)
    # Clamp at 0 too: above the diagonal (masked anyway) the difference is positive and exp could overflow.
    weights.clamp_(_MIN_LOG_DECAY, 0.0).exp_()
    weights.view(b, c, g, hg, q, q).mul_(scores.unsqueeze(3))
    y_diag = weights @ x_dt  # (b,c,h,q,p)

    # 2. What each chunk adds to the state, decayed to its end: sum_s exp(Acum_last - Acum_s) dt_s x_s B_s,
    #    per group as B^T (n,q) @ [decayed x of its heads] (q, hg*p).
    to_end = torch.exp((A_cum[:, :, -1:] - A_cum).clamp_(min=_MIN_LOG_DECAY)).mul_(dt)  # (b,c,q,h)
    x_to_end = torch.empty(b, c, g, q, hg * p, **new)
    torch.mul(
        x.view(b, c, q, g, hg, p).transpose(2, 3),
        to_end.view(b, c, q, g, hg, 1).transpose(2, 3),
        out=x_to_end.view(b, c, g, q, hg, p),
    )
    chunk_states = B_c.transpose(-1, -2) @ x_to_end  # (b,c,g,n,hg*p)

    # 3. Across chunks: the state entering each chunk (a loop over chunks, not tokens).
    chunk_decay = torch.exp(A_cum[:, :, -1].clamp(min=_MIN_LOG_DECAY)).view(b, c, g, 1, hg, 1)
    entering = torch.empty(b, c + 1, g, n, hg, p, **new)  # entering[k]: state before chunk k
    entering[:, 0] = 0.0 if state is None else state.view(b, g, n, hg, p)
    chunk_states = chunk_states.view(b, c, g, n, hg, p)
    for k in range(c):
        torch.addcmul(chunk_states[:, k], entering[:, k], chunk_decay[:, k], out=entering[:, k + 1])
    state = entering[:, c].reshape(b, g, n, hg * p)
    entering = entering[:, :c].view(b, c, g, n, hg * p)

    # 4. Contribution of the entering state: exp(Acum_l) C_l . state, then both parts in (b,t,h,p) order.
    y_prev = (C_c @ entering).view(b, c, g, q, hg, p)
    decay_in = torch.exp(A_cum.clamp(min=_MIN_LOG_DECAY)).view(b, c, q, g, hg, 1)
    y = torch.empty(b, c, q, g, hg, p, **new)
    torch.addcmul(y_diag.transpose(2, 3).view(b, c, q, g, hg, p), y_prev.transpose(2, 3), decay_in, out=y)
    return y.view(b, c * q, h, p)[:, :t], state


# ------------------------------------------------------------------------------ mixer and block


def causal_conv(x: Tensor, conv_state: Tensor, taps: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise causal conv over time in (b, t, channel) layout, continuing from `conv_state`.

    conv_state (b, k, channel) holds the last k inputs before x (zeros before a sequence starts) and is
    updated in place to the last k inputs including x. taps (k, channel), bias (channel) or None.
    out[s] = bias + sum_j taps[j] * xs[s + j], where xs = conv_state[1:] ++ x: k shifted multiply-adds,
    with no transposes.
    """
    k, t = taps.shape[0], x.shape[1]
    xs = torch.cat([conv_state[:, 1:], x], dim=1)  # (b, k-1+t, channel)
    conv_state.copy_(xs[:, -k:])
    out = xs[:, :t] * taps[0] if bias is None else torch.addcmul(bias, xs[:, :t], taps[0])
    for j in range(1, k):
        out.addcmul_(xs[:, j : j + t], taps[j])
    return out


class Mamba2Mixer(nn.Module):
    """in_proj -> causal conv -> SSD scan (prefill) or recurrence (decode) -> gated RMSNorm -> out_proj."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_size: int | None = None  # None: CPU_CHUNK_SIZE on CPU, the config's elsewhere
        h = cfg.n_heads
        self.in_proj = nn.Linear(cfg.d_model, cfg.d_inner + cfg.conv_dim + h, bias=cfg.proj_bias)
        self.conv1d = nn.Conv1d(
            cfg.conv_dim, cfg.conv_dim, cfg.d_conv, groups=cfg.conv_dim, bias=cfg.conv_bias
        )
        self.dt_bias = nn.Parameter(torch.zeros(h))
        self.A_log = nn.Parameter(torch.zeros(h))
        self.D = nn.Parameter(torch.ones(h))
        self.norm = GatedRMSNorm(cfg.d_inner, cfg.n_groups, cfg.norm_eps)
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=cfg.proj_bias)

    def _chunk_size(self, device: torch.device) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return min(CPU_CHUNK_SIZE, self.cfg.chunk_size) if device.type == "cpu" else self.cfg.chunk_size

    def _derived(self) -> tuple[Tensor, Tensor, Tensor]:
        """A and D (h) in float32 and the conv taps (d_conv, conv_dim), derived at every call as mamba_ssm
        does: a few thousand numbers, 1.6% of a decode step (d_model 256, batch 1, CPU), and no cached
        copies to keep in sync."""
        return -torch.exp(self.A_log.float()), self.D.float(), self.conv1d.weight[:, 0].t().contiguous()

    def _inputs(self, u: Tensor, conv_state: Tensor, taps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """in_proj, causal conv and activations: u (b, t, d_model) -> z in the model dtype, and x, B, C and
        dt in float32, each (b, t, channels); updates the conv state."""
        cfg = self.cfg
        gn = cfg.n_groups * cfg.d_state
        z, xBC, dt = self.in_proj(u).split([cfg.d_inner, cfg.conv_dim, cfg.n_heads], dim=-1)
        # Column slices of the projection; elementwise ops over strided rows run ~2x slower than a copy costs.
        xBC = F.silu(causal_conv(xBC.contiguous(), conv_state, taps, self.conv1d.bias), inplace=True)
        x, B, C = xBC.float().split([cfg.d_inner, gn, gn], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if cfg.dt_min > 0.0 or cfg.dt_max < math.inf:
            dt = dt.clamp(cfg.dt_min, cfg.dt_max)
        return z.contiguous(), x, B, C, dt

    def forward(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """u (b, t, d_model) after the states of a cache; returns (b, t, d_model) and updates both states."""
        cfg = self.cfg
        b, t, _ = u.shape
        A, D, taps = self._derived()
        z, x, B, C, dt = self._inputs(u, conv_state, taps)
        y, final_state = ssd_scan(
            x.view(b, t, cfg.n_heads, cfg.headdim),
            dt,
            A,
            B.reshape(b, t, cfg.n_groups, cfg.d_state),
            C.reshape(b, t, cfg.n_groups, cfg.d_state),
            self._chunk_size(u.device),
            ssm_state,
        )
        ssm_state.copy_(final_state)
        y = torch.addcmul(y, x.view(b, t, cfg.n_heads, cfg.headdim), D[:, None])  # skip: y += D x
        return self.out_proj(self.norm(y.view(b, t, cfg.d_inner), z))

    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token per row, the recurrence: u (b, d_model) -> (b, d_model); updates both states in place.

        state <- state * exp(dt A) + (dt x) outer B;  y = C . state + D x  (state in the cache layout).
        """
        cfg = self.cfg
        b = u.shape[0]
        g, hg, p, n = cfg.n_groups, cfg.n_heads // cfg.n_groups, cfg.headdim, cfg.d_state
        A, D, taps = self._derived()
        z, x, B, C, dt = self._inputs(u[:, None], conv_state, taps)
        x, dt = x.view(b, cfg.n_heads, p), dt.view(b, cfg.n_heads, 1)
        ssm_state.view(b, g, n, hg, p).mul_(torch.exp(dt * A[:, None]).view(b, g, 1, hg, 1))
        ssm_state.addcmul_(B.view(b, g, n, 1), (x * dt).view(b, g, 1, hg * p))
        y = C.view(b, g, 1, n) @ ssm_state  # (b, g, 1, hg*p): channel order
        y = torch.addcmul(y.view(b, cfg.n_heads, p), x, D[:, None])
        return self.out_proj(self.norm(y.view(b, 1, cfg.d_inner), z))[:, 0]


class Mamba2Block(nn.Module):
    """Pre-norm residual block, no MLP: residual + mixer(norm(residual)); the residual stream stays float32."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = Mamba2Mixer(cfg)

    def forward(self, residual: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """(b, t, d_model) after the layer's states; updates them."""
        return residual + self.mixer(self.norm(residual), conv_state, ssm_state)

    def step(self, residual: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """(b, d_model), one token per row; updates the layer's states."""
        return residual + self.mixer.step(self.norm(residual), conv_state, ssm_state)


class Mamba2Backbone(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)


# ------------------------------------------------------------------------------ cache and model


@dataclass
class Mamba2Cache:
    """Per-layer recurrent state of a batch: constant size, whatever the sequence length.

    conv[i] (b, d_conv, conv_dim), model dtype: the last d_conv pre-conv inputs (zeros before the start).
    ssm[i] (b, g, n, hg*p) float32: the SSM state in the cache layout (see `state_to_heads`).
    """

    conv: list[Tensor]
    ssm: list[Tensor]

    @property
    def batch_size(self) -> int:
        return self.ssm[0].shape[0]

    def nbytes(self) -> int:
        """Bytes held by the conv and SSM states."""
        return sum(t.numel() * t.element_size() for t in self.conv + self.ssm)

    def select(self, index: Tensor) -> Mamba2Cache:
        """A new cache holding rows `index` (rows may repeat, e.g. to fork n samples from one prompt)."""
        return Mamba2Cache(
            conv=[s.index_select(0, index) for s in self.conv],
            ssm=[s.index_select(0, index) for s in self.ssm],
        )

    @classmethod
    def stack(cls, caches: list[Mamba2Cache]) -> Mamba2Cache:
        """One cache whose rows are the rows of `caches`, in order."""
        layers = range(len(caches[0].ssm))
        return cls(
            conv=[torch.cat([c.conv[i] for c in caches]) for i in layers],
            ssm=[torch.cat([c.ssm[i] for c in caches]) for i in layers],
        )

    def head(self, n: int) -> Mamba2Cache:
        """A view of the first n rows: decoding it updates this cache."""
        return Mamba2Cache(conv=[s[:n] for s in self.conv], ssm=[s[:n] for s in self.ssm])

    def assign(self, index: Tensor, source: Mamba2Cache) -> None:
        """Rows `index` become copies of the rows of `source` (in order; a one-row source fills them all)."""
        for dst, src in zip(self.conv + self.ssm, source.conv + source.ssm, strict=True):
            dst[index] = src


class Mamba2LM(nn.Module):
    """Mamba-2 language model; parameter names are those of transformers' Mamba2ForCausalLM."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.config = cfg
        # Longest piece of a prompt forward_cached runs at once: the scan's temporaries grow with it.
        self.prefill_segment = 4096
        self.backbone = Mamba2Backbone(cfg)
        # Tied checkpoints (mamba_ssm's default) store no lm_head: the head reads the embedding matrix.
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    @property
    def chunk_size(self) -> int | None:
        """Chunk length of the prefill scan (None: automatic); changes speed and memory, not results."""
        return self.backbone.layers[0].mixer.chunk_size

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        for block in self.backbone.layers:
            block.mixer.chunk_size = value

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embeddings.weight.device

    def new_cache(self, batch_size: int, length: int = 0) -> Mamba2Cache:
        """Zero states for `batch_size` rows; `length` (room for positions) is moot: the state is constant-size."""
        cfg = self.config
        shape_conv = (batch_size, cfg.d_conv, cfg.conv_dim)
        shape_ssm = (batch_size, cfg.n_groups, cfg.d_state, cfg.d_inner // cfg.n_groups)
        return Mamba2Cache(
            conv=[torch.zeros(shape_conv, dtype=self.dtype, device=self.device) for _ in range(cfg.n_layers)],
            ssm=[torch.zeros(shape_ssm, dtype=torch.float32, device=self.device) for _ in range(cfg.n_layers)],
        )

    def _embed(self, input_ids: Tensor) -> Tensor:
        residual = self.backbone.embeddings(input_ids)
        return residual.float() if self.config.residual_in_fp32 else residual

    def _logits(self, residual: Tensor) -> Tensor:
        weight = self.backbone.embeddings.weight if self.lm_head is None else self.lm_head.weight
        return vocab_logits(self.backbone.norm_f(residual), weight)

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Logits (b, t, vocab) float32 for a batch of equal-length sequences, from an empty state."""
        return self.forward_cached(input_ids, self.new_cache(input_ids.shape[0]), last_only)

    def forward_cached(self, input_ids: Tensor, cache: Mamba2Cache, last_only: bool = False) -> Tensor:
        """Consume input_ids (b, t) after what `cache` holds, updating it in place; logits (b, t|1, vocab)."""
        t, segment = input_ids.shape[1], self.prefill_segment
        if t == 1:
            return self.decode_step(input_ids[:, 0], cache)[:, None]
        if t > segment:
            # Long prompts go through in segments: same result (the cache carries the state), bounded memory.
            pieces = [
                self.forward_cached(input_ids[:, i : i + segment], cache, last_only) for i in range(0, t, segment)
            ]
            return pieces[-1] if last_only else torch.cat(pieces, dim=1)
        residual = self._embed(input_ids)
        for block, conv, ssm in zip(self.backbone.layers, cache.conv, cache.ssm, strict=True):
            residual = block(residual, conv, ssm)
        return self._logits(residual[:, -1:] if last_only else residual)

    def decode_step(self, tokens: Tensor, cache: Mamba2Cache) -> Tensor:
        """One token per row, tokens (b,) -> logits (b, vocab) float32; updates the cache in place.

        Fixed shapes and no host synchronisation: the step can be captured in a CUDA graph.
        """
        residual = self._embed(tokens)
        for block, conv, ssm in zip(self.backbone.layers, cache.conv, cache.ssm, strict=True):
            residual = block.step(residual, conv, ssm)
        return self._logits(residual)


# ------------------------------------------------------------------------------ loading

# Parameters the references keep in float32 whatever the checkpoint dtype.
_FP32_PARAMETERS = ("mixer.A_log", "mixer.dt_bias", "mixer.D")


def _native_to_hf_name(name: str) -> str:
    name = name.removeprefix("model.")
    return name.replace("backbone.embedding.", "backbone.embeddings.")


def load_mamba2(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> Mamba2LM:
    """Load a Mamba-2 checkpoint (transformers or native layout) in eval mode, without gradients.

    dtype defaults to the dtype the weights are stored in; device to CUDA when present, else CPU.
    """
    fmt, raw = read_config(path)
    try:
        cfg = Mamba2Config.from_hf(raw) if fmt == "hf" else Mamba2Config.from_native(raw)
    except (KeyError, TypeError, ValueError) as e:
        name = "config.json" if fmt == "hf" else "params.json"
        raise CheckpointError(f"{os.fspath(path)}/{name}: not a usable Mamba-2 config ({e!r})") from e
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or stored_dtype(path)

    with torch.device("meta"):  # shapes only: the real tensors come straight from the file
        model = Mamba2LM(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    rename = _native_to_hf_name if fmt == "native" else (lambda name: name)
    state = load_weights(
        path, expected, rename, dtype, device, keep_dtype=lambda name: name.endswith(_FP32_PARAMETERS)
    )
    model.load_state_dict(state, assign=True)
    return model.eval().requires_grad_(False)
