"""Mamba-2 (SSD) language model in plain PyTorch, loading Codestral Mamba checkpoints.

Reads top to bottom: config -> norms -> chunked SSD scan (prefill) -> causal conv -> mixer (prefill
and single-token decode) -> residual block -> cache -> language model -> loader.

Numerics follow the references (state-spaces/mamba, transformers' Mamba2): the scan, the SSM state,
the gated norm and the residual stream are float32 whatever the weight dtype; matmuls of the
projections run in the weight dtype.

Shapes: b batch, t time, h heads, p head dim, g groups, n state size, q chunk length, c chunks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from evalkit.models.checkpoint import CheckpointError, load_weights, read_config, stored_dtype


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


# Prefill chunk length on CPU. Work within a chunk grows with its length, work across chunks shrinks;
# on CPU 64 is fastest (about 1.3x the speed of Codestral's 256 at 2048 tokens). Other devices keep the
# checkpoint's chunk_size. Either way the results are the same.
CPU_CHUNK_SIZE = 64

_causal_masks: dict[tuple[int, torch.device], Tensor] = {}


def _strictly_upper(q: int, device: torch.device) -> Tensor:
    """Boolean (q, q) mask of positions s > l, which a causal scan must not see."""
    key = (q, device)
    if key not in _causal_masks:
        _causal_masks[key] = torch.ones(q, q, dtype=torch.bool, device=device).triu(1)
    return _causal_masks[key]


# exp() of a decay below this is < 1e-26: zero next to any term that matters, and clamping there keeps
# the elementwise products out of the (very slow on CPU) denormal range.
_MIN_LOG_DECAY = -60.0


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Chunked state-space-duality scan (the ssd_minimal_discrete algorithm), in float32.

    x (b,t,h,p), dt (b,t,h) after softplus, A (h) negative, B and C (b,t,g,n).
    state: the SSM state before the first token, or None for zeros, in the cache layout (b,g,n,hg*p):
    per group, the (p, n) state of each of its hg heads, transposed and side by side, so that
    C . state is a plain matmul whose output is already in channel order.
    Returns y (b,t,h,p) without the D skip, and the state after the last token (b,g,n,hg*p).

    Within a chunk the scan is a masked "attention" (C_l . B_s) exp(Acum_l - Acum_s); across chunks a
    short recurrence carries the state. Padding with zeros to a multiple of the chunk length keeps the
    result exact: a padded step has dt = 0, so no decay (dt*A = 0) and no input (x*dt = 0).
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
    scores.masked_fill_(_strictly_upper(q, x.device), 0.0)  # causal: masked once per group, not per head
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


def causal_conv(x: Tensor, history: Tensor | None, taps: Tensor, offset: Tensor) -> Tensor:
    """Depthwise causal conv in (b, t, channel) layout as k shifted multiply-adds: no transposes, no padding.

    out[s] = offset + sum_j taps[j] * input[s - (k-1) + j]; inputs before x[0] are history (b, k-1, channel)
    when given (continuing from a cache), zeros otherwise.
    """
    k, t = taps.shape[0], x.shape[1]
    out = torch.addcmul(offset, x, taps[k - 1])
    for lag in range(1, min(k, t)):
        out[:, lag:].addcmul_(x[:, : t - lag], taps[k - 1 - lag])
    if history is not None:
        for lag in range(1, k):
            for s in range(min(lag, t)):  # the first outputs reach back before x[0]
                out[:, s].addcmul_(history[:, k - 1 + s - lag], taps[k - 1 - lag])
    return out


class Mamba2Mixer(nn.Module):
    """in_proj -> causal conv -> SSD scan -> gated RMSNorm -> out_proj."""

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
        # Derived from the parameters once (see refresh_derived), not at every decode step.
        self.register_buffer("A", torch.zeros(h), persistent=False)
        self.register_buffer("D_channels", torch.zeros(cfg.d_inner), persistent=False)
        self.register_buffer("conv_taps", torch.zeros(cfg.d_conv, cfg.conv_dim), persistent=False)
        self.register_buffer("conv_offset", torch.zeros(cfg.conv_dim), persistent=False)

    @torch.no_grad()
    def refresh_derived(self) -> None:
        """Recompute the float32 A, per-channel D and (tap, channel) conv weights from the parameters."""
        cfg = self.cfg
        self.A = -torch.exp(self.A_log.float())
        self.D_channels = self.D.float().repeat_interleave(cfg.headdim)
        self.conv_taps = self.conv1d.weight.squeeze(1).t().contiguous()
        bias = self.conv1d.bias
        self.conv_offset = torch.zeros_like(self.conv_taps[0]) if bias is None else bias.detach().clone()

    def _chunk_size(self, device: torch.device) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return min(CPU_CHUNK_SIZE, self.cfg.chunk_size) if device.type == "cpu" else self.cfg.chunk_size

    def _split_projection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        cfg = self.cfg
        return self.in_proj(u).split([cfg.d_inner, cfg.conv_dim, cfg.n_heads], dim=-1)

    def _dt(self, dt: Tensor) -> Tensor:
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.cfg.dt_min > 0.0 or self.cfg.dt_max < math.inf:
            dt = dt.clamp(self.cfg.dt_min, self.cfg.dt_max)
        return dt

    def forward(self, u: Tensor, conv_state: Tensor | None = None, ssm_state: Tensor | None = None) -> Tensor:
        """Process u (b,t,d_model). With states (from a cache), continue from them and update them in place.

        conv_state (b, d_conv, conv_dim) holds the last d_conv pre-conv inputs; ssm_state (b, g, n, hg*p)
        float32 is the layout `ssd_scan` documents.
        """
        cfg = self.cfg
        b, t, _ = u.shape
        z, xBC, dt = self._split_projection(u)
        # Column slices of the projection; elementwise ops over strided rows run ~2x slower than a copy costs.
        z, xBC = z.contiguous(), xBC.contiguous()

        history = None if conv_state is None else conv_state[:, 1:]
        conv = causal_conv(xBC, history, self.conv_taps, self.conv_offset)
        if conv_state is not None:
            conv_state.copy_(torch.cat([conv_state, xBC[:, -cfg.d_conv :]], dim=1)[:, -cfg.d_conv :])
        xBC = F.silu(conv, inplace=True)

        x, B, C = xBC.split([cfg.d_inner, cfg.n_groups * cfg.d_state, cfg.n_groups * cfg.d_state], dim=-1)
        x = x.float()
        y, final_state = ssd_scan(
            x.view(b, t, cfg.n_heads, cfg.headdim),
            self._dt(dt),
            self.A,
            B.float().view(b, t, cfg.n_groups, cfg.d_state),
            C.float().view(b, t, cfg.n_groups, cfg.d_state),
            self._chunk_size(u.device),
            ssm_state,
        )
        if ssm_state is not None:
            ssm_state.copy_(final_state)
        y = torch.addcmul(y.view(b, t, cfg.d_inner), x, self.D_channels)
        return self.out_proj(self.norm(y, z))

    def step(self, u: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token per row: u (b, d_model) -> (b, d_model); updates both states in place."""
        cfg = self.cfg
        b = u.shape[0]
        g, hg, p, n = cfg.n_groups, cfg.n_heads // cfg.n_groups, cfg.headdim, cfg.d_state
        z, xBC, dt = self._split_projection(u)

        window = torch.cat([conv_state[:, 1:], xBC.unsqueeze(1)], dim=1)
        conv_state.copy_(window)
        xBC = F.silu((window * self.conv_taps).sum(1).add_(self.conv_offset))
        x, B, C = xBC.split([cfg.d_inner, g * n, g * n], dim=-1)

        x = x.float()
        dt = self._dt(dt)  # (b,h)
        # state <- state * exp(dt A) + (dt x) outer B; B and C are shared by the heads of a group.
        # state is (b, g, n, hg*p): heads of a group side by side, each (p, n) state transposed.
        heads = ssm_state.view(b, g, n, hg, p)
        heads.mul_((dt * self.A).exp_().view(b, g, 1, hg, 1))
        dx = (x.view(b, cfg.n_heads, p) * dt.unsqueeze(-1)).view(b, g, 1, hg * p)
        ssm_state.addcmul_(B.float().view(b, g, n, 1), dx)
        y = C.float().view(b, g, 1, n) @ ssm_state  # (b, g, 1, hg*p): channel order
        y = torch.addcmul(y.view(b, cfg.d_inner), x, self.D_channels)
        return self.out_proj(self.norm(y, z))


class Mamba2Block(nn.Module):
    """Pre-norm residual block: residual + mixer(norm(residual)); the residual stream stays float32."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = Mamba2Mixer(cfg)


class Mamba2Backbone(nn.Module):
    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Mamba2Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)


@dataclass
class Mamba2Cache:
    """Per-layer recurrent state of a batch: constant size, whatever the sequence length.

    conv[i] (b, d_conv, conv_dim), model dtype: the last d_conv pre-conv inputs (zeros before the start).
    ssm[i] (b, g, n, hg*p) float32: per group, its heads' (p, n) states transposed side by side.
    """

    conv: list[Tensor]
    ssm: list[Tensor]

    @property
    def batch_size(self) -> int:
        return self.ssm[0].shape[0]

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


class Mamba2LM(nn.Module):
    """Mamba-2 language model; parameter names are those of transformers' Mamba2ForCausalLM."""

    def __init__(self, cfg: Mamba2Config) -> None:
        super().__init__()
        self.config = cfg
        # Longest piece of a prompt forward_cached runs at once: the scan's temporaries grow with it.
        self.prefill_segment = 4096
        self.backbone = Mamba2Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight
        self.refresh_derived()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.refresh_derived())

    def refresh_derived(self) -> None:
        for block in self.backbone.layers:
            block.mixer.refresh_derived()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Mamba2LM:
        # .to()/.cuda()/.half() convert buffers too; rebuild the derived ones from the converted parameters.
        result = super()._apply(fn, recurse)
        if self.lm_head.weight.device.type != "meta":
            self.refresh_derived()
        return result

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
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def _residual_dtype(self) -> torch.dtype:
        return torch.float32 if self.config.residual_in_fp32 else self.dtype

    def _logits(self, residual: Tensor, last_only: bool) -> Tensor:
        if last_only:
            residual = residual[:, -1:]
        return self.lm_head(self.backbone.norm_f(residual)).float()

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Logits (b, t, vocab) float32 for a batch of equal-length sequences, from an empty state."""
        return self.forward_cached(input_ids, self.new_cache(input_ids.shape[0]), last_only)

    def new_cache(self, batch_size: int) -> Mamba2Cache:
        cfg = self.config
        shape_conv = (batch_size, cfg.d_conv, cfg.conv_dim)
        shape_ssm = (batch_size, cfg.n_groups, cfg.d_state, cfg.d_inner // cfg.n_groups)
        return Mamba2Cache(
            conv=[torch.zeros(shape_conv, dtype=self.dtype, device=self.device) for _ in range(cfg.n_layers)],
            ssm=[
                torch.zeros(shape_ssm, dtype=torch.float32, device=self.device) for _ in range(cfg.n_layers)
            ],
        )

    def forward_cached(self, input_ids: Tensor, cache: Mamba2Cache, last_only: bool = False) -> Tensor:
        """Consume input_ids (b, t) after what `cache` holds, updating it in place; logits (b, t|1, vocab)."""
        segment = self.prefill_segment
        if input_ids.shape[1] > segment:
            # Long prompts go through in segments: same result (the cache carries the state), bounded memory.
            pieces = [
                self.forward_cached(input_ids[:, i : i + segment], cache, last_only)
                for i in range(0, input_ids.shape[1], segment)
            ]
            return pieces[-1] if last_only else torch.cat(pieces, dim=1)
        layers = self.backbone.layers
        residual = self.backbone.embeddings(input_ids).to(self._residual_dtype())
        if input_ids.shape[1] == 1:
            residual = residual[:, 0]
            for block, conv, ssm in zip(layers, cache.conv, cache.ssm, strict=True):
                residual = residual + block.mixer.step(block.norm(residual), conv, ssm)
            residual = residual.unsqueeze(1)
        else:
            for block, conv, ssm in zip(layers, cache.conv, cache.ssm, strict=True):
                residual = residual + block.mixer(block.norm(residual), conv, ssm)
        return self._logits(residual, last_only)


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

    with torch.device("meta"):
        model = Mamba2LM(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if cfg.tie_embeddings:
        del expected["lm_head.weight"]
    rename = _native_to_hf_name if fmt == "native" else (lambda name: name)
    state = load_weights(
        path, expected, rename, dtype, device, keep_dtype=lambda name: name.endswith(_FP32_PARAMETERS)
    )
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["backbone.embeddings.weight"]
    model.load_state_dict(state, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.backbone.embeddings.weight
    model.refresh_derived()
    return model.eval().requires_grad_(False)
