"""LIV operators of every STAR class, each with a parallel form and a step form.

Operator table (our concrete choices; numbers come from :mod:`staredge.models.star.choices`,
d = model width, L = tokens seen, k = kernel length):

=====  =========  ===================================================================  ==========================
class  name       operator                                                             decode state per LIV
=====  =========  ===================================================================  ==========================
1      SA-1       causal softmax attention, RoPE (base 1e4), heads = d/64, no biases   K,V: 2·d·L
2      SA-2       SA-1 + causal depthwise conv (k=3) on q, k, v after projection       K,V + 3·d·(k-1)
3      SA-3       grouped-query attention, 4 query heads per K/V head                  2·d/4·L
4      SA-4       grouped-query attention, 2 query heads per K/V head                  2·d/2·L
5      Rec-1      Mamba-style selective scan: d_inner = 2d, groups x, z, Δ, B, C;     d_inner·N + (4-1)·d_inner
                  x -> conv k=4 -> SiLU; Δ = softplus(rank-d/16 proj + bias);
                  h = exp(ΔA)h + ΔBx, y = (C·h + D x)·SiLU(z); N = 16
6      Rec-2      Rec-1 with N = 2                                                     d_inner·2 + 3·d_inner
7      GConv-1    y = out(C ⊙ conv_k3(B ⊙ x)), B, C, x = linear projections            (k-1)·d
8      GConv-2    as GConv-1 with an implicit long filter h(t) = MLP(pos. features)     history of u = B⊙x: d·L
                  ⊙ exp(-r_c t) (sin MLP, log-spaced decays); FFT in the parallel
                  form, exact direct sum over the history in the step form
9      GMemless   SwiGLU, hidden = ceil(8/3·d / 256)·256                               none
10-13  Diff-SA    Differential Transformer attention: q, k split in two halves per    as SA-1..4
                  head, softmax(q1k1) - λ softmax(q2k2), per-head RMSNorm, ×(1-λ_init);
                  λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init, λ_init = 0.8-0.6e^{-0.3·layer}
14-17  Diff-x     two copies of class 5-8 (own featurizers and output projections),    2 × base
                  y = op1(x) - λ·op2(x), λ re-parametrised as above (vectors of 16)
=====  =========  ===================================================================  ==========================

Feature-group sharing (gene 5, see ``choices.SHARING_STRATEGIES``): attention 2 = K,
3 = V, 4 = K and V (cross-layer KV sharing); recurrences 2 = B,C, 3 = Δ,B,C, 4 = x (after the
conv), 5 = x,Δ,B,C; gated convs 2 = C, 3 = B,x (their product u, the conv input), 4 = B,x,C;
GMemless 2 = gate, 3 = gate and up. A consumer takes those groups from its producer (for
attention the producer's whole K/V cache, for convs the producer's conv input window) and
keeps no cache for them. A consumer that shares every input-dependent group (GConv 4,
GMemless 3) applies only its own output projection to the producer's features, and the
backbone gives it no pre-norm.

Every operator implements ``_mix(x, state, pos, shared) -> (y, new_state, exports)``.
``state=None`` selects the parallel form over a whole sequence starting at position 0;
otherwise ``state`` is the dict returned by ``init_state`` or a previous step, and ``x``
holds the tokens at positions ``pos .. pos+T-1``. States are plain dicts of tensors that are
never modified in place: a step returns a new dict, so a state can be kept and reused.
``exports`` are the feature groups later consumers may take.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.models.star import choices as C
from staredge.models.star.config import (
    LIVConfig,
    attention_shape,
    recurrence_sizes,
    short_kernel,
    swiglu_hidden,
)

Tensor = torch.Tensor
State = dict[str, Tensor]


# ----------------------------------------------------------------------------------------
# Small shared pieces
# ----------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (no bias)."""

    def __init__(self, dim: int, eps: float = C.NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise over the last dimension and scale."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _linear(n_in: int, n_out: int, bias: bool = False) -> nn.Linear:
    lin = nn.Linear(n_in, n_out, bias=bias)
    nn.init.normal_(lin.weight, std=C.INIT_STD)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


def _conv_weight(channels: int, kernel: int) -> nn.Parameter:
    # PyTorch's default depthwise-conv init range (fan-in = kernel).
    bound = 1.0 / math.sqrt(kernel)
    return nn.Parameter(torch.empty(channels, kernel).uniform_(-bound, bound))


def causal_conv(window: Tensor, weight: Tensor) -> Tensor:
    """Depthwise causal convolution. ``window`` [B, T+k-1, C] holds k-1 past steps followed by
    T new ones; returns [B, T, C] with ``y[t] = sum_j weight[:, j] * window[t + j]``."""
    return F.conv1d(window.transpose(1, 2), weight.unsqueeze(1), groups=weight.shape[0]).transpose(1, 2)


def with_history(new: Tensor, ring: Tensor | None, kernel: int) -> Tensor:
    """Prepend the conv ring (zeros at the start of a sequence) to the new steps."""
    if ring is None:
        ring = new.new_zeros(new.shape[0], kernel - 1, new.shape[2])
    return torch.cat([ring, new], dim=1)


def rope_table(length: int, dim: int, base: float = C.ROPE_BASE, device=None,
               factor: float | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles for positions 0..length-1, each [length, dim // 2].

    ``factor`` (linear position scaling) divides the frequencies; None or 1 leaves them."""
    half = dim // 2
    inv = base ** (-torch.arange(half, device=device, dtype=torch.float32) / half)
    if factor is not None and factor != 1:
        inv = inv / factor
    ang = torch.arange(length, device=device, dtype=torch.float32)[:, None] * inv[None]
    return ang.cos(), ang.sin()


def rope(x: Tensor, pos: int, table: tuple[Tensor, Tensor] | None = None, base: float = C.ROPE_BASE,
         factor: float | None = None) -> Tensor:
    """Rotary embedding (rotate-half) of ``x`` [B, T, ..., D] at positions pos..pos+T-1.

    ``table`` is a precomputed :func:`rope_table` (used when it covers the positions)."""
    t, d = x.shape[1], x.shape[-1]
    half = d // 2
    if table is not None and pos + t <= table[0].shape[0]:
        cos, sin = table[0][pos:pos + t], table[1][pos:pos + t]
    else:
        cos, sin = (v[pos:] for v in rope_table(pos + t, d, base, x.device, factor))
    shape = (1, t) + (1,) * (x.ndim - 3) + (half,)
    cos, sin = cos.to(x.dtype).view(shape), sin.to(x.dtype).view(shape)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def lambda_init(layer_index: int) -> float:
    """Differential Transformer's depth-dependent λ_init."""
    a, b, c = C.DIFF_LAMBDA_INIT
    return a - b * math.exp(-c * layer_index)


class DiffLambda(nn.Module):
    """λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init (Differential Transformer re-parametrisation)."""

    def __init__(self, size: int, layer_index: int) -> None:
        super().__init__()
        self.init_value = lambda_init(layer_index)
        self.q1, self.k1, self.q2, self.k2 = (nn.Parameter(torch.randn(size) * 0.1) for _ in range(4))

    def forward(self) -> Tensor:
        """The current λ (a scalar tensor)."""
        return torch.exp((self.q1 * self.k1).sum()) - torch.exp((self.q2 * self.k2).sum()) + self.init_value


class LIV(nn.Module, ABC):
    """Base of every operator: ``forward`` is the parallel form, ``step`` the step form."""

    liv_class: int
    shared_groups: tuple[str, ...]

    def forward(self, x: Tensor, shared: dict | None = None) -> tuple[Tensor, dict]:
        """Parallel form over ``x`` [B, T, d] from position 0: returns (y, exports)."""
        y, _, exports = self._mix(x, None, 0, shared or {})
        return y, exports

    def step(self, x: Tensor, state: State, pos: int, shared: dict | None = None) -> tuple[Tensor, State, dict]:
        """Step form: ``x`` [B, T_new, d] at positions pos.., returns (y, new_state, exports)."""
        return self._mix(x, state, pos, shared or {})

    @abstractmethod
    def init_state(self, batch_size: int, device=None, dtype=None) -> State:  # pragma: no cover - abstract
        """The empty decode state (position 0)."""
        raise NotImplementedError

    @abstractmethod
    def _mix(self, x, state, pos, shared):  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------------------
# Attention: classes 1-4 and differential 10-13
# ----------------------------------------------------------------------------------------


class AttentionFeaturizer(nn.Module):
    """Linear q/k/v projections (only the groups some user needs) and, for SA-2, a causal
    depthwise conv per group (the Toeplitz featurizer)."""

    def __init__(self, dim: int, out_dims: dict[str, int], groups, kernel: int | None) -> None:
        super().__init__()
        self.kernel = kernel
        self.proj = nn.ModuleDict({g: _linear(dim, out_dims[g]) for g in sorted(groups)})
        self.conv = nn.ParameterDict({g: _conv_weight(out_dims[g], kernel) for g in sorted(groups)} if kernel else {})

    def feature(self, group: str, x: Tensor, ring: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Features of one group for new tokens, and the new conv ring (None without conv)."""
        y = self.proj[group](x)
        if not self.kernel:
            return y, None
        window = with_history(y, ring, self.kernel)
        return causal_conv(window, self.conv[group]), window[:, window.shape[1] - (self.kernel - 1):]


def attend(q: Tensor, k: Tensor, v: Tensor, pos: int, lam: Tensor | None = None) -> Tensor:
    """Causal (differential when ``lam`` is given) softmax attention, plain PyTorch.

    q [B, H, Tq, D] at positions pos..; k, v [B, Hkv, Tk, D] at positions 0..Tk-1.
    """
    h, hkv = q.shape[1], k.shape[1]
    if h != hkv:
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
    tq, tk = q.shape[2], k.shape[2]
    # One new token at the end of the cache sees every key: no mask needed.
    allowed = None if tq == 1 and tk == pos + 1 else (
        torch.arange(tk, device=q.device)[None, :] <= (torch.arange(tq, device=q.device)[:, None] + pos))

    def probs(qq: Tensor, kk: Tensor) -> Tensor:
        s = (qq @ kk.transpose(-1, -2)) * qq.shape[-1] ** -0.5
        if allowed is not None:
            s = s.masked_fill(~allowed, float("-inf"))
        return torch.softmax(s, dim=-1)

    if lam is None:
        return probs(q, k) @ v
    half = q.shape[-1] // 2
    p = probs(q[..., :half], k[..., :half]) - lam * probs(q[..., half:], k[..., half:])
    return p @ v


def attend_causal_sdpa(q: Tensor, k: Tensor, v: Tensor, lam: Tensor | None = None) -> Tensor:
    """Fast path of :func:`attend` for a whole sequence from position 0 (Tq == Tk):
    PyTorch's fused ``scaled_dot_product_attention``. Differential attention is linear in
    the probabilities, so it is two fused calls: ``A(q1,k1)v - λ A(q2,k2)v``."""
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    if lam is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    half = q.shape[-1] // 2
    a = F.scaled_dot_product_attention(q[..., :half], k[..., :half], v, is_causal=True)
    b = F.scaled_dot_product_attention(q[..., half:], k[..., half:], v, is_causal=True)
    return a - lam * b


class Attention(LIV):
    """SA-1..4 (multi-head / grouped-query) and their differential variants 10-13."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: AttentionFeaturizer,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        self.shape = attention_shape(liv_class, dim, cfg)
        self.kernel = featurizer.kernel
        self.featurizer = featurizer
        self.out = _linear(self.shape.heads * self.shape.head_dim, dim)
        self.differential = C.is_differential(liv_class)
        if self.differential:
            self.lam = DiffLambda(self.shape.head_dim // 2, layer_index)
            self.sub_norm = RMSNorm(self.shape.head_dim)
        # Optional per-head q/k RMSNorm before the rotary embedding (LFM2, Qwen3-style).
        self.qk_norm = bool(cfg.qk_norm)
        if self.qk_norm:
            eps = C.NORM_EPS if cfg.norm_eps is None else float(cfg.norm_eps)
            self.q_norm = RMSNorm(self.shape.head_dim, eps)
            self.k_norm = RMSNorm(self.shape.head_dim, eps)
        self.rope_base = C.ROPE_BASE if cfg.rope_base is None else float(cfg.rope_base)
        self.rope_factor = None if cfg.rope_factor is None else float(cfg.rope_factor)
        # Rotary angles for the whole context, computed once (not saved with the weights).
        rot = self.shape.head_dim // 2 if self.differential else self.shape.head_dim
        cos, sin = rope_table(min(max_seq_len, C.ROPE_TABLE_MAX), rot, self.rope_base,  # beyond: computed per call
                              factor=self.rope_factor)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> AttentionFeaturizer:
        """The featurizer for ``groups`` (subset of q, k, v)."""
        s = attention_shape(liv_class, dim, cfg)
        dims = {"q": s.heads * s.head_dim, "k": s.kv_heads * s.head_dim, "v": s.kv_heads * s.head_dim}
        kernel = short_kernel(liv_class, cfg) if C.base_class(liv_class) == 2 else None
        return AttentionFeaturizer(dim, dims, groups, kernel)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        s, st = self.shape, {}
        for g, name in (("k", "key"), ("v", "value")):
            if g not in self.shared_groups:
                st[name] = torch.zeros(batch_size, s.kv_heads, 0, s.head_dim, device=device, dtype=dtype)
        if self.kernel:
            for g in ("q", "k", "v"):
                if g not in self.shared_groups:
                    width = (s.heads if g == "q" else s.kv_heads) * s.head_dim
                    st[f"conv_{g}"] = torch.zeros(batch_size, self.kernel - 1, width, device=device, dtype=dtype)
        return st

    def _rope(self, t: Tensor, pos: int) -> Tensor:
        table = (self.rope_cos, self.rope_sin)
        if not self.differential:
            return rope(t, pos, table, self.rope_base, self.rope_factor)
        b, n, h, d = t.shape  # the two halves of each head rotate separately
        return rope(t.view(b, n, h, 2, d // 2), pos, table, self.rope_base, self.rope_factor).view(b, n, h, d)

    def head_norm(self, group: str, t: Tensor) -> Tensor:
        """The q/k RMSNorm of ``group`` over the last axis (head_dim); identity without qk_norm."""
        if not self.qk_norm or group == "v":
            return t
        return (self.q_norm if group == "q" else self.k_norm)(t)

    def _mix(self, x, state, pos, shared):
        b, t, _ = x.shape
        s = self.shape
        new: State = {}

        def ring(name):
            return None if state is None else state.get(name)

        q, r = self.featurizer.feature("q", x, ring("conv_q"))
        if r is not None:
            new["conv_q"] = r
        q = self._rope(self.head_norm("q", q.view(b, t, s.heads, s.head_dim)), pos).transpose(1, 2)
        kv = {}
        for g, name in (("k", "key"), ("v", "value")):
            if g in self.shared_groups:
                kv[g] = shared[g]  # the producer's whole cache, positions 0..pos+t-1
                continue
            f, r = self.featurizer.feature(g, x, ring(f"conv_{g}"))
            if r is not None:
                new[f"conv_{g}"] = r
            f = f.view(b, t, s.kv_heads, s.head_dim)
            if g == "k":
                f = self._rope(self.head_norm("k", f), pos)
            f = f.transpose(1, 2)
            kv[g] = f if state is None else torch.cat([state[name], f], dim=2)
            new[name] = kv[g]
        lam = self.lam() if self.differential else None
        # Parallel form: fused kernel; step form: the plain reference (parity tests compare them).
        if state is None:
            o = attend_causal_sdpa(q, kv["k"], kv["v"], lam)
        else:
            o = attend(q, kv["k"], kv["v"], pos, lam)
        if self.differential:
            o = self.sub_norm(o) * (1.0 - self.lam.init_value)
        y = self.out(o.transpose(1, 2).reshape(b, t, s.heads * s.head_dim))
        return y, (new if state is not None else None), kv


# ----------------------------------------------------------------------------------------
# Recurrences: classes 5-6
# ----------------------------------------------------------------------------------------


class RecurrenceFeaturizer(nn.Module):
    """Mamba-style featurizer: x (projection + causal conv + SiLU), z, and Δ, B, C computed
    from the convolved x. Holds only the groups some user needs."""

    def __init__(self, dim: int, d_inner: int, state_size: int, kernel: int, dt_rank: int, groups) -> None:
        super().__init__()
        self.kernel = kernel
        if "x" in groups:
            self.x_proj = _linear(dim, d_inner)
            self.x_conv = _conv_weight(d_inner, kernel)
        if "z" in groups:
            self.z_proj = _linear(dim, d_inner)
        if "dt" in groups:
            self.dt_down = _linear(d_inner, dt_rank)
            self.dt_up = nn.Linear(dt_rank, d_inner, bias=False)
            nn.init.uniform_(self.dt_up.weight, -dt_rank ** -0.5, dt_rank ** -0.5)
            # Mamba's Δ init: softplus(bias) log-uniform in [DT_MIN, DT_MAX].
            dt = torch.exp(torch.rand(d_inner) * (math.log(C.REC_DT_MAX) - math.log(C.REC_DT_MIN)) + math.log(C.REC_DT_MIN))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        if "B" in groups:
            self.B_proj = _linear(d_inner, state_size)
        if "C" in groups:
            self.C_proj = _linear(d_inner, state_size)


def selective_scan(x: Tensor, dt: Tensor, a: Tensor, bm: Tensor, cm: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Reference diagonal selective scan (plain PyTorch, one step per token).

    x, dt [B, T, Di]; a [Di, N]; bm, cm [B, T, N]; h [B, Di, N] -> (y [B, T, Di], h_T).
    """
    ys = []
    for i in range(x.shape[1]):
        decay = torch.exp(dt[:, i, :, None] * a)
        h = decay * h + (dt[:, i] * x[:, i])[:, :, None] * bm[:, i, None, :]
        ys.append((h * cm[:, i, None, :]).sum(-1))
    return torch.stack(ys, dim=1), h


def selective_scan_fast(x: Tensor, dt: Tensor, a: Tensor, bm: Tensor, cm: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Same result as :func:`selective_scan`, faster to train: decays and inputs for all
    steps are computed at once, the loop is one fused multiply-add per token, and the
    per-token views come from ``unbind`` (whose backward is one stack, where slicing a big
    tensor per step would allocate a full-size gradient per step)."""
    decay = torch.exp(dt.unsqueeze(-1) * a).unbind(1)
    inp = ((dt * x).unsqueeze(-1) * bm.unsqueeze(2)).unbind(1)
    hs = []
    for i in range(x.shape[1]):
        h = torch.addcmul(inp[i], decay[i], h)
        hs.append(h)
    return torch.einsum("btdn,btn->btd", torch.stack(hs, dim=1), cm), h


class Recurrence(LIV):
    """Rec-1 / Rec-2: input-varying diagonal linear recurrence (Mamba-style)."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: RecurrenceFeaturizer,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        self.d_inner, self.state_size, self.kernel, _ = recurrence_sizes(liv_class, dim, cfg)
        self.featurizer = featurizer
        a = torch.arange(1, self.state_size + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out = _linear(self.d_inner, dim)

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> RecurrenceFeaturizer:
        """The featurizer for ``groups`` (subset of x, z, dt, B, C)."""
        d_inner, n, k, rank = recurrence_sizes(liv_class, dim, cfg)
        return RecurrenceFeaturizer(dim, d_inner, n, k, rank, groups)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        st = {"ssm": torch.zeros(batch_size, self.d_inner, self.state_size, device=device, dtype=dtype)}
        if "x" not in self.shared_groups:
            st["conv"] = torch.zeros(batch_size, self.kernel - 1, self.d_inner, device=device, dtype=dtype)
        return st

    def _mix(self, x, state, pos, shared):
        f, sg, new = self.featurizer, self.shared_groups, {}
        if "x" in sg:
            xc = shared["x"]
        else:
            window = with_history(f.x_proj(x), None if state is None else state["conv"], self.kernel)
            xc = F.silu(causal_conv(window, f.x_conv))
            new["conv"] = window[:, window.shape[1] - (self.kernel - 1):]
        z = f.z_proj(x)
        dt = shared["dt"] if "dt" in sg else F.softplus(f.dt_up(f.dt_down(xc)) + f.dt_bias)
        bm = shared["B"] if "B" in sg else f.B_proj(xc)
        cm = shared["C"] if "C" in sg else f.C_proj(xc)
        h0 = state["ssm"] if state is not None else xc.new_zeros(x.shape[0], self.d_inner, self.state_size)
        # Parallel form: fast scan; step form: the plain reference (parity tests compare them).
        scan = selective_scan_fast if state is None else selective_scan
        y, h = scan(xc, dt, -torch.exp(self.A_log), bm, cm, h0)
        y = (y + xc * self.D) * F.silu(z)
        new["ssm"] = h
        exports = {"x": xc, "dt": dt, "B": bm, "C": cm}
        return self.out(y), (new if state is not None else None), exports


# ----------------------------------------------------------------------------------------
# Gated convolutions: classes 7-8
# ----------------------------------------------------------------------------------------


class GConvFeaturizer(nn.Module):
    """Linear projections B, x, C (diagonal-channel gates around the convolution); with
    biases when ``bias`` (GConv-1 with ``LIVConfig(bias=True)``)."""

    def __init__(self, dim: int, groups, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({g: _linear(dim, dim, bias) for g in sorted(groups)})


class GatedShortConv(LIV):
    """GConv-1: ``out(C ⊙ conv_k(B ⊙ x))`` with an explicit short filter."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: GConvFeaturizer,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        self.kernel = short_kernel(liv_class, cfg)
        self.featurizer = featurizer
        self.filter = _conv_weight(dim, self.kernel)
        self.filter_bias = nn.Parameter(torch.zeros(dim)) if cfg.bias else None
        self.out = _linear(dim, dim, bool(cfg.bias))

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> GConvFeaturizer:
        """The featurizer for ``groups`` (subset of B, x, C)."""
        return GConvFeaturizer(dim, groups, bool(cfg.bias))

    def conv(self, window: Tensor) -> Tensor:
        """The short filter over ``window`` (k-1 past steps + T new), plus its bias if any."""
        y = causal_conv(window, self.filter)
        return y if self.filter_bias is None else y + self.filter_bias

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        if "x" in self.shared_groups:
            return {}
        dim = self.filter.shape[0]
        return {"conv": torch.zeros(batch_size, self.kernel - 1, dim, device=device, dtype=dtype)}

    def _mix(self, x, state, pos, shared):
        p, sg, new = self.featurizer.proj, self.shared_groups, {}
        if "x" in sg:
            window = shared["u"]  # the producer's conv input window, k-1 past steps + new ones
        else:
            window = with_history(p["B"](x) * p["x"](x), None if state is None else state["conv"], self.kernel)
            new["conv"] = window[:, window.shape[1] - (self.kernel - 1):]
        c = shared["C"] if "C" in sg else p["C"](x)
        y = self.out(c * self.conv(window))
        return y, (new if state is not None else None), {"u": window, "C": c}


def fft_causal_conv(u: Tensor, h: Tensor) -> Tensor:
    """Causal long convolution via FFT: u [B, T, d], h [T, d] -> [B, T, d]."""
    t = u.shape[1]
    n = 1 << (2 * t - 1).bit_length()
    y = torch.fft.irfft(torch.fft.rfft(u, n=n, dim=1) * torch.fft.rfft(h, n=n, dim=0), n=n, dim=1)
    return y[:, :t].to(u.dtype)


def direct_causal_conv(hist: Tensor, h: Tensor, t_new: int) -> Tensor:
    """Exact causal convolution for the last ``t_new`` positions of ``hist`` [B, P+T, d]."""
    total = hist.shape[1]
    p = total - t_new
    lag = (p + torch.arange(t_new, device=hist.device))[:, None] - torch.arange(total, device=hist.device)[None, :]
    taps = h[lag.clamp(min=0)] * (lag >= 0)[..., None].to(h.dtype)  # [T, P+T, d]
    return torch.einsum("tsd,bsd->btd", taps, hist)


class GatedLongConv(LIV):
    """GConv-2: ``out(C ⊙ (h * (B ⊙ x)))`` with a Hyena-style implicit long filter."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: GConvFeaturizer,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        self.dim, self.max_seq_len = dim, max_seq_len
        self.featurizer = featurizer
        emb = 1 + 2 * C.LONGCONV_EMB_FREQS
        self.filter_in = nn.Linear(emb, C.LONGCONV_MLP_HIDDEN, bias=False)
        # Small output init keeps early filters short-acting in effect: taps of ~0.05 summed
        # over a long history stay O(1) instead of growing with the context.
        self.filter_out = _linear(C.LONGCONV_MLP_HIDDEN, dim)
        lo, hi = C.LONGCONV_DECAY_RANGE
        self.register_buffer("decay_rates", torch.logspace(math.log10(lo), math.log10(hi), dim), persistent=False)
        self.out = _linear(dim, dim)

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> GConvFeaturizer:
        """The featurizer for ``groups`` (subset of B, x, C)."""
        return GConvFeaturizer(dim, groups)

    def long_filter(self, length: int) -> Tensor:
        """Filter taps h[0..length-1] as [length, d] (computed, not stored)."""
        t = torch.arange(length, device=self.decay_rates.device, dtype=self.filter_in.weight.dtype)
        z = t / self.max_seq_len
        feats = [z[:, None]]
        for f in range(1, C.LONGCONV_EMB_FREQS + 1):
            feats += [torch.sin(2 * math.pi * f * z)[:, None], torch.cos(2 * math.pi * f * z)[:, None]]
        h = self.filter_out(torch.sin(self.filter_in(torch.cat(feats, dim=1))))
        return h * torch.exp(-t[:, None] * self.decay_rates[None, :].to(h.dtype))

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        if "x" in self.shared_groups:
            return {}
        return {"longconv": torch.zeros(batch_size, 0, self.dim, device=device, dtype=dtype)}

    def _mix(self, x, state, pos, shared):
        p, sg, new = self.featurizer.proj, self.shared_groups, {}
        t = x.shape[1]
        if "x" in sg:
            hist = shared["u"]  # the producer's whole history of u, positions 0..pos+t-1
        else:
            u = p["B"](x) * p["x"](x)
            hist = u if state is None else torch.cat([state["longconv"], u], dim=1)
            new["longconv"] = hist
        h = self.long_filter(hist.shape[1])
        if state is None:
            conv = fft_causal_conv(hist, h)
        elif t <= C.LONGCONV_DIRECT_MAX_NEW:
            conv = direct_causal_conv(hist, h, t)
        else:
            conv = fft_causal_conv(hist, h)[:, hist.shape[1] - t:]
        c = shared["C"] if "C" in sg else p["C"](x)
        return self.out(c * conv), (new if state is not None else None), {"u": hist, "C": c}


# ----------------------------------------------------------------------------------------
# Gated memoryless unit: class 9
# ----------------------------------------------------------------------------------------


class MemlessFeaturizer(nn.Module):
    """SwiGLU's gate and up projections."""

    def __init__(self, dim: int, hidden: int, groups) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({g: _linear(dim, hidden) for g in sorted(groups)})


class SwiGLU(LIV):
    """GMemless: ``down(SiLU(gate(x)) ⊙ up(x))``; token-wise, no decode state."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: MemlessFeaturizer,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        self.featurizer = featurizer
        self.out = _linear(swiglu_hidden(dim, cfg), dim)

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> MemlessFeaturizer:
        """The featurizer for ``groups`` (subset of gate, up)."""
        return MemlessFeaturizer(dim, swiglu_hidden(dim, cfg), groups)

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        return {}

    def _mix(self, x, state, pos, shared):
        p, sg = self.featurizer.proj, self.shared_groups
        gate = shared["gate"] if "gate" in sg else F.silu(p["gate"](x))
        up = shared["up"] if "up" in sg else p["up"](x)
        return self.out(gate * up), ({} if state is not None else None), {"gate": gate, "up": up}


# ----------------------------------------------------------------------------------------
# Differential variants of the non-attention classes: 14-17
# ----------------------------------------------------------------------------------------


class Differential(LIV):
    """Two copies of a base operator (classes 5-8), ``y = op_a(x) - λ·op_b(x)``.

    Each copy has its own featurizer, filter and output projection; state keys are prefixed
    ``a.`` / ``b.``; sharing applies copy-wise (copy a takes from the producer's copy a)."""

    def __init__(self, dim: int, liv_class: int, cfg: LIVConfig, layer_index: int, featurizer: nn.ModuleList,
                 shared_groups: tuple[str, ...], max_seq_len: int) -> None:
        super().__init__()
        self.liv_class, self.shared_groups = liv_class, tuple(shared_groups)
        base = C.base_class(liv_class)
        op = OPERATORS[base]
        self.branch_a = op(dim, base, cfg, layer_index, featurizer[0], shared_groups, max_seq_len)
        self.branch_b = op(dim, base, cfg, layer_index, featurizer[1], shared_groups, max_seq_len)
        self.lam = DiffLambda(C.DIFF_LAMBDA_DIM, layer_index)

    @staticmethod
    def make_featurizer(dim: int, liv_class: int, cfg: LIVConfig, groups) -> nn.ModuleList:
        """A pair of base-class featurizers, one per copy."""
        base = C.base_class(liv_class)
        op = OPERATORS[base]
        return nn.ModuleList([op.make_featurizer(dim, base, cfg, groups) for _ in range(2)])

    def init_state(self, batch_size: int, device=None, dtype=None) -> State:
        st = {}
        for tag, br in (("a", self.branch_a), ("b", self.branch_b)):
            st.update({f"{tag}.{k}": v for k, v in br.init_state(batch_size, device, dtype).items()})
        return st

    def _mix(self, x, state, pos, shared):
        outs, new, exports = [], {}, {}
        for tag, br in (("a", self.branch_a), ("b", self.branch_b)):
            sub = None if state is None else {k[2:]: v for k, v in state.items() if k.startswith(tag + ".")}
            y, st, ex = br._mix(x, sub, pos, shared.get(tag, {}))
            outs.append(y)
            exports[tag] = ex
            if st is not None:
                new.update({f"{tag}.{k}": v for k, v in st.items()})
        y = outs[0] - self.lam() * outs[1]
        return y, (new if state is not None else None), exports


#: Operator class per base LIV class.
OPERATORS = {1: Attention, 2: Attention, 3: Attention, 4: Attention, 5: Recurrence, 6: Recurrence,
             7: GatedShortConv, 8: GatedLongConv, 9: SwiGLU}


def operator_type(liv_class: int) -> type[LIV]:
    """The module class implementing a LIV class (1-17)."""
    if C.is_differential(liv_class) and C.family(liv_class) != "attention":
        return Differential
    return OPERATORS[C.base_class(liv_class)]
