"""The exportable decode graph of a STAR language model (an export-time transform).

:class:`LMDecodeGraph` wraps a :class:`~staredge.models.star.STARLanguageModel` into one
function with static state shapes, the contract every LM artifact follows
(``docs/lm-artifacts.md``)::

    (input_ids int64 [1, T], position int64 [1], past_X ... ) -> (logits float32 [1, T, V], present_X ...)

``position`` is the position of the chunk's first token. There is one ``past_X`` per state
tensor of :func:`state_spec`, and ``present_X`` has the same shape and order. The state is
exactly what the static cache analysis counts (:func:`staredge.models.star.analysis.cache_elements`
at ``seq_len = max_context``):

* ``kv``: K or V of an attention *producer*, ``[1, kv_heads, max_context, head_dim]``; the
  new tokens are written at ``position`` (``cache_write``, :data:`CACHE_WRITES`: a one-hot
  blend over the whole buffer with no scatter op, the default here; ONNX ``ScatterElements``
  or LiteRT ``DYNAMIC_UPDATE_SLICE`` of the T new rows only), and attention reads the whole
  buffer with keys past ``position + t`` masked out (``attend="buffer"``) or only the rows
  ``0 .. position + T - 1`` (``attend="prefix"``, a dynamic length), which gives exactly the
  growing-cache result either way;
* ``conv``: short-conv rings (the last ``k - 1`` inputs of a causal conv), as in the step form;
* ``ssm``: the recurrence state ``[1, d_inner, N]``; a chunk of T tokens is scanned in
  closed form (``h_t = e^{L_t} h_0 + Σ_{s≤t} e^{L_t - L_s} Δ_s B_s x_s`` with ``L`` the
  running sum of ``Δ A``, masked before the exponential), so T may vary in one graph;
* ``longconv``: the long convolution's input history ``[1, max_context, dim]`` (written like
  K/V), convolved with the implicit filter by a masked tap matrix.

Feature-group consumers read their producer's tensors inside the graph and hold no state.
In the default modes the graph uses only gathers, matmuls, selects and elementwise ops; each
exporter picks its modes (``exporters/*_lm.py``). It works for any T ≥ 1
(decode T = 1; prefill chunks) as long as ``position + T <= max_context``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from staredge.errors import ConfigError
from staredge.models.star import choices as C
from staredge.models.star.backbone import STARLanguageModel, STARState
from staredge.models.star.liv import (
    Attention,
    DiffLambda,
    Differential,
    GatedLongConv,
    GatedShortConv,
    Recurrence,
    SwiGLU,
    causal_conv,
    rope_table,
)

Tensor = torch.Tensor

#: Default number of tokens per prefill call (a fixed chunk where the format needs one).
DEFAULT_PREFILL_CHUNK = 16
#: ``kind`` values of the state spec.
STATE_KINDS = ("kv", "conv", "ssm", "longconv")
#: How new rows reach a fixed buffer (K/V, long-conv history): ``blend`` (one-hot matmul +
#: select over the whole buffer, no scatter op: the portable form), ``scatter`` (ONNX
#: ``ScatterElements`` of the T new rows only), ``dynamic_update_slice`` (LiteRT's
#: ``DYNAMIC_UPDATE_SLICE`` of the T new rows).
CACHE_WRITES = ("blend", "scatter", "dynamic_update_slice")
#: What attention (and the long convolution) reads: ``buffer`` (the whole fixed buffer with
#: the rows past ``position + t`` masked out: static shapes) or ``prefix`` (only rows
#: ``0 .. position + T - 1``, a dynamic length: formats with dynamic shapes).
ATTENDS = ("buffer", "prefix")


@dataclass(frozen=True)
class StateTensor:
    """One state tensor of the decode graph.

    ``name`` is X in ``past_X`` / ``present_X`` (e.g. ``key_values.2.key``, ``conv.0``,
    ``ssm.4.a``); ``liv`` is the 0-based LIV index; ``key`` the LIV's own cache key.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    liv: int
    key: str

    @property
    def input_name(self) -> str:
        """Graph input name (``past_`` + name)."""
        return "past_" + self.name

    @property
    def output_name(self) -> str:
        """Graph output name (``present_`` + name)."""
        return "present_" + self.name

    @property
    def numel(self) -> int:
        """Number of elements."""
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    @property
    def nbytes(self) -> int:
        """Bytes at the tensor's dtype (float32: 4 per element)."""
        return self.numel * {"float32": 4, "float16": 2}[self.dtype]

    def to_dict(self) -> dict:
        """JSON-able form used in the artifact metadata (``lm.state``)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["input"], d["output"] = self.input_name, self.output_name
        return d


def _kind(key: str) -> str:
    name = key.rpartition(".")[2]
    if name in ("key", "value"):
        return "kv"
    if name.startswith("conv"):
        return "conv"
    return name  # ssm, longconv


def _fixed_shape(model: STARLanguageModel, liv_index: int, key: str, init: Tensor, max_context: int) -> tuple[int, ...]:
    kind = _kind(key)
    if kind == "kv":
        return (1, int(init.shape[1]), max_context, int(init.shape[3]))
    if kind == "longconv":
        return (1, max_context, int(init.shape[2]))
    return (1,) + tuple(int(s) for s in init.shape[1:])


def state_spec(model: STARLanguageModel, max_context: int) -> list[StateTensor]:
    """The decode graph's state tensors in graph order (LIV order, then the LIV's cache keys).

    Names follow :meth:`STARState.named_tensors` without the leading ``past_``.
    """
    caches = model.backbone.init_state(1, device=torch.device("cpu"), dtype=torch.float32)
    where = {id(t): (i, key) for i, c in enumerate(caches) for key, t in c.items()}
    spec = []
    for name, t in STARState(0, caches, 1).named_tensors().items():
        i, key = where[id(t)]
        spec.append(StateTensor(name[len("past_"):], _fixed_shape(model, i, key, t, max_context), "float32",
                                _kind(key), i, key))
    return spec


def resolve_max_context(model: STARLanguageModel, max_context: int | None) -> int:
    """``max_context`` checked against the model (default: the model's ``max_seq_len``)."""
    m = int(model.max_seq_len if max_context is None else max_context)
    if m < 2:
        raise ConfigError(f"max_context must be at least 2 tokens, got {m}")
    if m > model.max_seq_len:
        raise ConfigError(
            f"max_context {m} exceeds the model's context of {model.max_seq_len} tokens (max_seq_len); "
            "the long-convolution filters and position tables are defined only up to it")
    return m


# ------------------------------------------------------------------------------------------
# fixed-buffer pieces
# ------------------------------------------------------------------------------------------


def _positions(position: Tensor, t: int, like: Tensor) -> Tensor:
    """Absolute positions of the chunk's tokens, [T] int64."""
    return position.reshape(1) + torch.arange(t, device=like.device, dtype=torch.int64)


def write_rows(buf: Tensor, new: Tensor, pos: Tensor, dim: int, mode: str = "blend") -> Tensor:
    """``buf`` with ``new`` written at rows ``pos[0]..pos[-1]`` along ``dim``.

    ``mode`` (:data:`CACHE_WRITES`): ``blend`` builds ``onehot[m, t] = (m == pos[t])`` and
    selects ``onehot @ new`` (exact: one 1.0 and zeros) where a row is hit, which costs
    O(buffer) per call but needs no scatter op; ``scatter`` and ``dynamic_update_slice`` write
    only the T new rows (O(T)), as ONNX ``ScatterElements`` / LiteRT ``DYNAMIC_UPDATE_SLICE``
    when exported. All three give identical values.
    """
    if mode == "scatter":
        return _ScatterRows.apply(buf, new, pos, dim)
    if mode == "dynamic_update_slice":
        from litert_torch.generative.custom_ops.dynamic_update_slice import dynamic_update_slice

        zero = torch.zeros([], dtype=torch.int32)
        start = [zero] * buf.ndim
        start[dim] = pos[0].to(torch.int32).reshape([])
        return dynamic_update_slice(buf, new, start)
    if mode != "blend":
        raise ConfigError(f"cache_write must be one of {', '.join(CACHE_WRITES)}, got {mode!r}")
    m = buf.shape[dim]
    rows = torch.arange(m, device=buf.device, dtype=torch.int64)
    onehot = (rows[:, None] == pos[None, :]).to(buf.dtype)  # [M, T]
    hit = onehot.sum(-1) > 0  # [M]
    last = buf.ndim - 1
    if dim == last - 1:
        # rows of a [..., M, D] buffer (the K/V caches): one matmul, no transposes of the
        # whole buffer (they were about 10 % of an ONNX Runtime decode step)
        placed = onehot @ new  # [M, T] @ [..., T, D] -> [..., M, D]
    else:
        moved = new.transpose(dim, last) if dim != last else new  # [..., T]
        placed = moved @ onehot.transpose(0, 1)  # [..., M]
        placed = placed.transpose(dim, last) if dim != last else placed
    shape = [1] * buf.ndim
    shape[dim] = m
    return torch.where(hit.view(shape), placed, buf)


class _FusedGQA(torch.autograd.Function):
    """One attention LIV's K/V write and causal attention over the filled rows.

    Eager: the portable math (rows written at ``pos``, softmax over keys ``<= pos[t]``, query
    head h reading K/V head ``h // (heads / kv_heads)``). ONNX: one
    ``com.microsoft.GroupQueryAttention`` (ONNX Runtime), which appends the T new rows into
    the fixed ``[1, kv_heads, max_context, head_dim]`` buffers (``seqlens_k = position + T -
    1``, ``total_sequence_length = position + T``) and attends over the filled rows only;
    the present buffers keep the past's shape, so the decode contract is unchanged. q, k, v
    come in rotated (rotary applied by the graph), ``[B, T, heads * head_dim]``.
    """

    @staticmethod
    def forward(ctx, q, k, v, past_k, past_v, pos, heads, kv_heads):  # noqa: D102
        b, t, _ = q.shape
        d = q.shape[-1] // heads
        pk = past_k.index_copy(2, pos, k.reshape(b, t, kv_heads, d).transpose(1, 2))
        pv = past_v.index_copy(2, pos, v.reshape(b, t, kv_heads, d).transpose(1, 2))
        rep = heads // kv_heads
        qh = q.reshape(b, t, heads, d).transpose(1, 2)
        kr, vr = pk.repeat_interleave(rep, dim=1), pv.repeat_interleave(rep, dim=1)
        cols = torch.arange(pk.shape[2], dtype=torch.int64)
        allowed = cols[None, :] <= pos[:, None]
        sc = (qh @ kr.transpose(-1, -2)) * (d ** -0.5)
        sc = torch.where(allowed, sc, torch.full_like(sc, float("-inf")))
        o = torch.softmax(sc, dim=-1) @ vr
        return o.transpose(1, 2).reshape(b, t, heads * d), pk, pv

    @staticmethod
    def symbolic(g, q, k, v, past_k, past_v, pos, heads, kv_heads):  # noqa: D102
        last = g.op("Gather", pos, g.op("Constant", value_t=torch.tensor(-1, dtype=torch.int64)), axis_i=0)
        one = g.op("Constant", value_t=torch.tensor(1, dtype=torch.int64))
        total = g.op("Cast", g.op("Add", last, one), to_i=6)  # int32 scalar
        seqlens = g.op("Cast", g.op("Reshape", last, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))),
                       to_i=6)  # int32 [1]
        return g.op("com.microsoft::GroupQueryAttention", q, k, v, past_k, past_v, seqlens, total,
                    num_heads_i=heads, kv_num_heads_i=kv_heads, outputs=3)


class _ScatterRows(torch.autograd.Function):
    """Eager: ``buf.index_copy(dim, pos, new)``. ONNX (TorchScript exporter): one
    ``ScatterElements(buf, expand(pos), new, axis=dim)``, which touches the T new rows only
    (ONNX Runtime copies ``buf`` first unless the output is bound to the input's buffer)."""

    @staticmethod
    def forward(ctx, buf, new, pos, dim):  # noqa: D102
        return buf.index_copy(dim, pos, new)

    @staticmethod
    def symbolic(g, buf, new, pos, dim):  # noqa: D102
        rank = len(buf.type().sizes())
        shape = [1] * rank
        shape[dim] = -1
        idx = g.op("Reshape", pos, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))
        idx = g.op("Expand", idx, g.op("Shape", new))
        return g.op("ScatterElements", buf, idx, new, axis_i=dim)


def _rope_at(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half rotary embedding with per-token tables cos/sin [T, half]; x [B, T, ..., D]."""
    half = x.shape[-1] // 2
    shape = (1, -1) + (1,) * (x.ndim - 3) + (half,)
    cos, sin = cos.to(x.dtype).reshape(shape), sin.to(x.dtype).reshape(shape)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _ring_conv(x_new: Tensor, ring: Tensor, weight: Tensor, kernel: int) -> tuple[Tensor, Tensor]:
    window = torch.cat([ring, x_new], dim=1)
    return causal_conv(window, weight), window[:, -(kernel - 1):]


class LMDecodeGraph(nn.Module):
    """Static-state decode graph of a STAR LM (see the module docstring).

    ``forward(input_ids, position, *past)`` returns ``(logits, *present)``. ``spec`` lists
    the state tensors in order; :meth:`zero_state` gives the initial state.
    """

    def __init__(self, model: STARLanguageModel, max_context: int | None = None, *,
                 cache_write: str = "blend", attend: str = "buffer", fused_attention: bool = False) -> None:
        super().__init__()
        if not isinstance(model, STARLanguageModel):
            raise ConfigError(f"LMDecodeGraph wraps a STARLanguageModel, got {type(model).__name__}")
        if cache_write not in CACHE_WRITES:
            raise ConfigError(f"cache_write must be one of {', '.join(CACHE_WRITES)}, got {cache_write!r}")
        if attend not in ATTENDS:
            raise ConfigError(f"attend must be one of {', '.join(ATTENDS)}, got {attend!r}")
        self.cache_write = cache_write
        self.attend = attend
        # ONNX Runtime's com.microsoft.GroupQueryAttention for attention K/V producers (see
        # _FusedGQA); other attention LIVs keep the portable form
        self.fused_attention = bool(fused_attention)
        self.model = model.eval()
        self.max_context = resolve_max_context(model, max_context)
        self.spec = state_spec(model, self.max_context)
        # Differential λ depends on weights only: computed once here and kept as a [1] buffer
        # (coremltools cannot constant-fold the 0-d expression of the model's DiffLambda).
        for i, liv in enumerate(model.backbone.livs):
            if isinstance(getattr(liv, "lam", None), DiffLambda):
                with torch.no_grad():
                    self.register_buffer(f"lam_{i}", liv.lam().detach().reshape(1).float(), persistent=False)
        # Rotary tables of length max_context per rotary width (the same function as the model's).
        # (keyed by rotary width, base and linear scaling: imported models choose the last two)
        self._rope: dict[tuple, str] = {}
        for liv in self._leaf_livs():
            if isinstance(liv, Attention):
                rot = liv.shape.head_dim // 2 if liv.differential else liv.shape.head_dim
                key = (rot, liv.rope_base, liv.rope_factor)
                if key not in self._rope:
                    name = f"{rot}" if not self._rope else f"{rot}_{len(self._rope)}"
                    cos, sin = rope_table(self.max_context, rot, liv.rope_base, factor=liv.rope_factor)
                    self.register_buffer(f"rope_cos_{name}", cos, persistent=False)
                    self.register_buffer(f"rope_sin_{name}", sin, persistent=False)
                    self._rope[key] = name

    def with_modes(self, cache_write: str | None = None, attend: str | None = None,
                   fused_attention: bool | None = None) -> "LMDecodeGraph":
        """This graph with another :data:`CACHE_WRITES` / :data:`ATTENDS` mode or fused-attention
        choice (``self`` when unchanged); the model and ``max_context`` are shared, the state
        contract is the same."""
        cw, at = cache_write or self.cache_write, attend or self.attend
        fu = self.fused_attention if fused_attention is None else bool(fused_attention)
        if (cw, at, fu) == (self.cache_write, self.attend, self.fused_attention):
            return self
        return LMDecodeGraph(self.model, self.max_context, cache_write=cw, attend=at, fused_attention=fu)

    def _prefix(self, pos: Tensor) -> Tensor:
        """Row indices ``0 .. pos[-1]`` (a dynamic length once exported)."""
        return torch.arange(pos[-1] + 1, device=pos.device, dtype=torch.int64)

    def _leaf_livs(self):
        for liv in self.model.backbone.livs:
            if isinstance(liv, Differential):
                yield liv.branch_a
                yield liv.branch_b
            else:
                yield liv

    def zero_state(self) -> list[Tensor]:
        """The state at position 0 (all zeros), in spec order."""
        return [torch.zeros(s.shape, dtype=torch.float32) for s in self.spec]

    def example_inputs(self, tokens: int = 1, position: int = 0) -> tuple[Tensor, ...]:
        """``(input_ids, position, *past)`` for tracing."""
        ids = torch.zeros(1, tokens, dtype=torch.int64)
        return (ids, torch.tensor([position], dtype=torch.int64), *self.zero_state())

    # -------------------------------------------------------------------- forward
    def forward(self, input_ids: Tensor, position: Tensor, *past: Tensor):
        """One decode-graph call: logits [1, T, V] and the new state tensors in spec order."""
        if len(past) != len(self.spec):
            raise ConfigError(f"the decode graph takes {len(self.spec)} state tensors, got {len(past)}")
        m = self.model
        bb = m.backbone
        caches: list[dict[str, Tensor]] = [{} for _ in bb.livs]
        for s, t in zip(self.spec, past):
            caches[s.liv][s.key] = t
        t_new = input_ids.shape[1]
        x = m.embed(input_ids)
        pos = _positions(position, t_new, input_ids)
        outputs, exports, new = {}, {}, [dict() for _ in bb.livs]
        for i, liv in enumerate(bb.livs):
            src = bb.residual_sources[i]
            u = x if src is None else x + outputs[src]
            p = bb.feature_producers[i]
            shared = {} if p is None else exports[p]
            y, st, ex = self._mix(liv, bb.norms[i](u), caches[i], pos, shared, i)
            new[i] = st
            x = u + y
            if i in bb._export_needed:
                exports[i] = ex
            if i in bb._keep_output:
                outputs[i] = x
        logits = m.head(m.norm(x))
        present = [new[s.liv][s.key] for s in self.spec]
        return (logits, *present)

    def _lambda(self, index: int) -> Tensor:
        return getattr(self, f"lam_{index}")

    def _mix(self, liv, x, st, pos, shared, index):
        if isinstance(liv, Differential):
            outs, new, exports = [], {}, {}
            for tag, br in (("a", liv.branch_a), ("b", liv.branch_b)):
                sub = {k[2:]: v for k, v in st.items() if k.startswith(tag + ".")}
                y, s, ex = self._mix(br, x, sub, pos, shared.get(tag, {}), index)
                outs.append(y)
                exports[tag] = ex
                new.update({f"{tag}.{k}": v for k, v in s.items()})
            return outs[0] - self._lambda(index) * outs[1], new, exports
        if isinstance(liv, Attention):
            return self._attention(liv, x, st, pos, shared, index)
        if isinstance(liv, Recurrence):
            return self._recurrence(liv, x, st, pos, shared)
        if isinstance(liv, GatedShortConv):
            return self._short_conv(liv, x, st, shared)
        if isinstance(liv, GatedLongConv):
            return self._long_conv(liv, x, st, pos, shared)
        if isinstance(liv, SwiGLU):
            y, _, ex = liv._mix(x, {}, 0, shared)
            return y, {}, ex
        raise ConfigError(f"no decode-graph form for LIV operator {type(liv).__name__}")  # pragma: no cover

    def _attention(self, liv: Attention, x, st, pos, shared, index):
        b, t, _ = x.shape
        s = liv.shape
        f = liv.featurizer
        new = {}
        rot = s.head_dim // 2 if liv.differential else s.head_dim
        name = self._rope[(rot, liv.rope_base, liv.rope_factor)]
        cos_t, sin_t = getattr(self, f"rope_cos_{name}"), getattr(self, f"rope_sin_{name}")
        cos, sin = cos_t.index_select(0, pos), sin_t.index_select(0, pos)

        def rope(v):
            if not liv.differential:
                return _rope_at(v, cos, sin)
            return _rope_at(v.reshape(b, -1, v.shape[2], 2, s.head_dim // 2), cos, sin).reshape(b, -1, v.shape[2], s.head_dim)

        def feature(g):
            y = f.proj[g](x)
            if f.kernel:
                y, ring = _ring_conv(y, st[f"conv_{g}"], f.conv[g], f.kernel)
                new[f"conv_{g}"] = ring
            return y

        q = rope(liv.head_norm("q", feature("q").reshape(b, -1, s.heads, s.head_dim)))
        # one-head attention stays portable: the TorchScript exporter's peephole pass fails on
        # the fused node there ("Argument passed to at() was not in the map", dim 64, torch 2.13)
        if (self.fused_attention and s.heads > 1 and not liv.differential
                and not ({"k", "v"} & set(liv.shared_groups))):
            k_new = rope(liv.head_norm("k", feature("k").reshape(b, -1, s.kv_heads, s.head_dim)))
            v_new = feature("v")
            o, new["key"], new["value"] = _FusedGQA.apply(
                q.flatten(2), k_new.flatten(2), v_new, st["key"], st["value"], pos, s.heads, s.kv_heads)
            return liv.out(o), new, {"k": new["key"], "v": new["value"]}
        q = q.transpose(1, 2)
        kv = {}
        for g, name in (("k", "key"), ("v", "value")):
            if g in liv.shared_groups:
                kv[g] = shared[g]  # the producer's whole buffer (already holds this chunk)
                continue
            v = feature(g).reshape(b, -1, s.kv_heads, s.head_dim)
            if g == "k":
                v = rope(liv.head_norm("k", v))  # q/k RMSNorm (identity unless LIVConfig.qk_norm)
            kv[g] = write_rows(st[name], v.transpose(1, 2), pos, dim=2, mode=self.cache_write)
            new[name] = kv[g]
        k, v = kv["k"], kv["v"]
        if self.attend == "prefix":
            cols = self._prefix(pos)  # rows 0 .. position + T - 1 only: O(context) reads, not O(buffer)
            # a K/V consumer reuses its producer's gathered rows (one gather per buffer, not per reader)
            k, v = (shared[g + "_read"] if g in liv.shared_groups and g + "_read" in shared
                    else kv[g].index_select(2, cols) for g in ("k", "v"))
            kv["k_read"], kv["v_read"] = k, v
        else:
            cols = torch.arange(k.shape[2], device=x.device, dtype=torch.int64)
        rep = s.heads // s.kv_heads
        # Grouped-query heads: the `rep` query heads of one K/V head are stacked along the
        # token axis ([B, kv, rep*T, D]) so K/V are never repeated (head h reads K/V head
        # h // rep, as repeat_interleave does in the model). No broadcast/expand of K/V: the
        # TFLite lowering of expand+reshape produced wrong values here.
        q = q.reshape(b, s.kv_heads, rep * t, s.head_dim)
        allowed = cols[None, :] <= pos[:, None]  # [T, M]

        def probs(qq, kk):
            sc = (qq @ kk.transpose(-1, -2)) * (qq.shape[-1] ** -0.5)  # [B, kv, rep*T, M]
            sc = sc.reshape(b, s.kv_heads, rep, t, sc.shape[-1])
            sc = torch.where(allowed, sc, torch.full_like(sc, float("-inf")))
            return torch.softmax(sc, dim=-1).reshape(b, s.kv_heads, rep * t, -1)

        if liv.differential:
            half = s.head_dim // 2
            lam = self._lambda(index)
            pr = probs(q[..., :half], k[..., :half]) - lam * probs(q[..., half:], k[..., half:])
            o = pr @ v
        else:
            o = probs(q, k) @ v
        o = o.reshape(b, s.heads, t, s.head_dim)
        if liv.differential:
            o = liv.sub_norm(o) * (1.0 - liv.lam.init_value)
        y = liv.out(o.transpose(1, 2).reshape(b, -1, s.heads * s.head_dim))
        return y, new, kv

    def _recurrence(self, liv: Recurrence, x, st, pos, shared):
        f, sg, new = liv.featurizer, liv.shared_groups, {}
        if "x" in sg:
            xc = shared["x"]
        else:
            conv, ring = _ring_conv(f.x_proj(x), st["conv"], f.x_conv, liv.kernel)
            xc = F.silu(conv)
            new["conv"] = ring
        z = f.z_proj(x)
        dt = shared["dt"] if "dt" in sg else F.softplus(f.dt_up(f.dt_down(xc)) + f.dt_bias)
        bm = shared["B"] if "B" in sg else f.B_proj(xc)
        cm = shared["C"] if "C" in sg else f.C_proj(xc)
        a = -torch.exp(liv.A_log)  # [Di, N]
        da = dt[..., None] * a  # [1, T, Di, N]
        cum = torch.cumsum(da, dim=1)
        inp = (dt * xc)[..., None] * bm[:, :, None, :]  # [1, T, Di, N]
        steps = torch.arange(x.shape[1], device=x.device, dtype=torch.int64)
        causal = (steps[None, :] <= steps[:, None])[None, :, :, None, None]  # [1, T(t), T(s), 1, 1]
        seg = cum[:, :, None] - cum[:, None, :]  # [1, T, T, Di, N]: L_t - L_s
        decay = torch.exp(torch.where(causal, seg, torch.full_like(seg, float("-inf"))))
        h_all = torch.exp(cum) * st["ssm"][:, None] + (decay * inp[:, None]).sum(2)  # [1, T, Di, N]
        y = (h_all * cm[:, :, None, :]).sum(-1)
        y = (y + xc * liv.D) * F.silu(z)
        new["ssm"] = h_all[:, -1]
        return liv.out(y), new, {"x": xc, "dt": dt, "B": bm, "C": cm}

    def _short_conv(self, liv: GatedShortConv, x, st, shared):
        p, sg, new = liv.featurizer.proj, liv.shared_groups, {}
        if "x" in sg:
            window = shared["u"]
        else:
            window = torch.cat([st["conv"], p["B"](x) * p["x"](x)], dim=1)
            new["conv"] = window[:, -(liv.kernel - 1):]
        c = shared["C"] if "C" in sg else p["C"](x)
        y = liv.out(c * liv.conv(window))  # the filter plus its bias, if any
        return y, new, {"u": window, "C": c}

    def _long_conv(self, liv: GatedLongConv, x, st, pos, shared):
        p, sg, new = liv.featurizer.proj, liv.shared_groups, {}
        if "x" in sg:
            hist = shared["u"]  # the producer's history buffer (holds this chunk already)
        else:
            hist = write_rows(st["longconv"], p["B"](x) * p["x"](x), pos, dim=1, mode=self.cache_write)
            new["longconv"] = hist
        mctx = hist.shape[1]
        h = liv.long_filter(mctx)  # [M, d], depends on weights only (constant-folded)
        if self.attend == "prefix":
            src = self._prefix(pos)
            read = hist.index_select(1, src)
        else:
            src = torch.arange(mctx, device=x.device, dtype=torch.int64)
            read = hist
        lag = pos[:, None] - src[None, :]  # [T, M]
        causal = lag >= 0
        idx = torch.where(causal, lag, torch.zeros_like(lag))  # not clamp: CoreML lowers clip to fp32
        taps = h.index_select(0, idx.reshape(-1)).reshape(-1, src.shape[0], h.shape[1])
        taps = taps * causal[..., None].to(h.dtype)
        conv = torch.einsum("tsd,bsd->btd", taps, read)
        c = shared["C"] if "C" in sg else p["C"](x)
        return liv.out(c * conv), new, {"u": hist, "C": c}


def lm_metadata_dict(graph: LMDecodeGraph, prefill_chunk: int = DEFAULT_PREFILL_CHUNK, name: str | None = None) -> dict:
    """The ``lm`` dict of :class:`~staredge.metadata.ArtifactMetadata` for ``graph``."""
    m = graph.model
    d = {
        "name": name or getattr(m, "staredge_name", None) or "star_lm",
        "genome": m.genome,
        "dim": m.dim,
        "depth": m.depth,
        "vocab_size": m.vocab_size,
        "bos_id": m.bos_id,  # the byte vocabulary's 256/257/258 unless the model says otherwise (imports)
        "eos_id": m.eos_id,
        "pad_id": m.pad_id,
        "max_context": graph.max_context,
        "prefill_chunk": int(prefill_chunk),
        "config": m.config_dict(),
        "state": [s.to_dict() for s in graph.spec],
        "state_bytes": sum(s.nbytes for s in graph.spec),
        "inputs": ["input_ids", "position"],
        "outputs": ["logits"],
    }
    tok = getattr(m, "tokenizer", None)
    if tok is not None:  # an imported model's tokenizer travels inside the artifact, hashed (staredge.tokenizer)
        from staredge.tokenizer import tokenizer_metadata_entry

        d["tokenizer"] = tokenizer_metadata_entry(tok)
    return d


__all__ = ["LMDecodeGraph", "StateTensor", "state_spec", "write_rows", "lm_metadata_dict", "resolve_max_context",
           "DEFAULT_PREFILL_CHUNK", "STATE_KINDS", "CACHE_WRITES", "ATTENDS"]
