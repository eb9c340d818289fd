"""LFM2 (Liquid AI, transformers ``Lfm2ForCausalLM``) as a STAR genome: import and export of
Hugging Face folders.

An LFM2 decoder layer is two pre-norm residual LIVs in STAR terms: its operator (a
double-gated short convolution, GConv-1, or grouped-query attention) and its feed-forward
(SwiGLU, GMemless). So an ``n``-layer LFM2 is a ``2n``-LIV STAR backbone whose genome says
what each layer is (``7-9-...`` for conv layers, ``3-9`` / ``4-9`` / ``1-9`` for attention
layers, no sharing), and whose :class:`~staredge.models.star.config.LIVConfig` per class
carries what the genome leaves open: head size and query heads per K/V head, per-head q/k
RMSNorm, RoPE base and linear scaling, the norm epsilon, the feed-forward width as LFM2
computes it, the conv kernel and biases. The vocabulary, special ids and tied embeddings
are the language model's own arguments.

Public names:

* :func:`from_pretrained` (``staredge.models.star.from_pretrained``): a local folder (or,
  with network access, a hub id through ``huggingface_hub``) -> :class:`STARLanguageModel`
  with ``.tokenizer`` (:class:`~staredge.tokenizer.HFTokenizer` or None) and ``.hf_config``.
* :func:`save_pretrained`: the same layout back (config.json, safetensors, tokenizer files).
* :func:`is_hf_folder`: whether a path is a Hugging Face model folder StarEdge can import.
* :func:`lfm2_ff_dim`, :func:`lfm2_genome`, :func:`lfm2_configs`: the mapping itself.

Safety: weights are read from safetensors only, header first (names, dtypes, shapes and
byte ranges are checked against the file size and the model before any tensor is read);
a pickle ``.bin`` is refused and never opened. Every problem is one typed error
(:mod:`staredge.errors`) naming the file and tensor.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from staredge.errors import (
    ConfigError,
    HFCheckpointError,
    PickleWeightsRefusedError,
    TensorMismatchError,
    TokenizerError,
    UnsupportedArchitectureError,
)
from staredge.formats import checkpoint_format
from staredge.models.star import choices as C
from staredge.models.star.config import LIVConfig

#: ``model_type`` values :func:`from_pretrained` can map onto a STAR genome.
SUPPORTED_MODEL_TYPES = ("lfm2",)

#: LFM2 ``layer_types`` values and the STAR families they become.
LAYER_CONV = "conv"
LAYER_ATTENTION = "full_attention"

#: Safetensors dtypes a floating-point parameter may be loaded from (cast to the model dtype).
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
#: Other dtypes safetensors knows (element size), so a header's byte ranges can be checked.
_OTHER_DTYPES = {"I8": 1, "U8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8, "BOOL": 1,
                 "F8_E4M3": 1, "F8_E5M2": 1}
#: Largest safetensors header read (bytes); real headers are well under 1 MB.
MAX_HEADER_BYTES = 64 << 20
#: The suffix of safetensors weight files (the format table's PyTorch checkpoint suffix).
SAFETENSORS_SUFFIX = checkpoint_format().primary_suffix
#: Weight files that are pickles (the table's PyTorch pickle suffixes and two more): refused,
#: never opened.
PICKLE_WEIGHT_SUFFIXES = (*checkpoint_format().pickle_suffixes, ".ckpt", ".pkl")
#: Default shard size of :func:`save_pretrained` (bytes), like transformers' 5 GB default.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
#: A hub id (``owner/name``) as opposed to a local path.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: Files a hub download fetches (never pickles).
HUB_ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model")


# ----------------------------------------------------------------------------------------
# The config mapping
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LFM2Spec:
    """What StarEdge reads from an LFM2 ``config.json`` (everything the mapping needs)."""

    vocab_size: int
    hidden_size: int
    layer_types: tuple[str, ...]
    num_heads: int
    num_kv_heads: int
    ff_dim: int
    norm_eps: float
    rope_theta: float
    rope_factor: float | None
    conv_bias: bool
    conv_kernel: int
    tie_embeddings: bool
    max_position_embeddings: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    @property
    def head_dim(self) -> int:
        """Attention head size (hidden / heads, as LFM2 computes it)."""
        return self.hidden_size // self.num_heads

    @property
    def attention_class(self) -> int:
        """The STAR attention class of these layers: SA-3 / SA-4 when the query/KV head ratio is
        the one they fix (4 / 2), SA-1 for plain multi-head, else SA-3 with the ratio as an
        operator choice (``LIVConfig.repeat_factor``)."""
        ratio = self.num_heads // self.num_kv_heads
        return {1: 1, 2: 4, 4: 3}.get(ratio, 3)


def _get(cfg: dict, key: str, kind: type | tuple, default: Any = ..., source: str = "config.json") -> Any:
    value = cfg.get(key, default)
    if value is ...:
        raise HFCheckpointError(f"{source} has no '{key}', which an LFM2 config needs")
    if value is None and default is None:
        return None
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise HFCheckpointError(f"{source}: '{key}' must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise HFCheckpointError(f"{source}: '{key}' must be a number, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise HFCheckpointError(f"{source}: '{key}' must be true or false, got {value!r}")
    return value


def lfm2_ff_dim(intermediate_size: int, auto_adjust: bool = True, multiplier: float | None = 1.0,
                multiple_of: int = 256) -> int:
    """The feed-forward width LFM2 builds from its config (``Lfm2MLP``): with
    ``block_auto_adjust_ff_dim``, ``int(2 * intermediate_size / 3)``, then, when a
    ``block_ffn_dim_multiplier`` is set, times it and rounded up to ``block_multiple_of``."""
    size = int(intermediate_size)
    if auto_adjust:
        size = int(2 * size / 3)
        if multiplier is not None:
            size = int(multiplier * size)
            size = multiple_of * ((size + multiple_of - 1) // multiple_of)
    return size


def parse_lfm2_config(cfg: dict, source: str = "config.json") -> LFM2Spec:
    """Check an LFM2 ``config.json`` dict and return its :class:`LFM2Spec`.

    Raises :class:`UnsupportedArchitectureError` for another ``model_type`` or a RoPE type
    other than default/linear, :class:`HFCheckpointError` for missing or malformed values.
    """
    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{source} must hold a JSON object")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitectureError(
            f"{source}: model_type {model_type!r} has no STAR mapping; StarEdge imports "
            f"{', '.join(SUPPORTED_MODEL_TYPES)} (Liquid AI's LFM2 family). Other architectures need a mapping "
            "in staredge/models/star/")
    hidden = _get(cfg, "hidden_size", int, source=source)
    layers = _get(cfg, "num_hidden_layers", int, source=source)
    heads = _get(cfg, "num_attention_heads", int, source=source)
    kv = _get(cfg, "num_key_value_heads", int, heads, source=source)
    for name, v in (("hidden_size", hidden), ("num_hidden_layers", layers), ("num_attention_heads", heads),
                    ("num_key_value_heads", kv)):
        if v < 1:
            raise HFCheckpointError(f"{source}: '{name}' must be positive, got {v}")
    if hidden % heads or heads % kv:
        raise HFCheckpointError(f"{source}: hidden_size {hidden} must divide into num_attention_heads {heads}, "
                                f"and those into num_key_value_heads {kv}")
    types = cfg.get("layer_types")
    if types is None:
        idxs = cfg.get("full_attn_idxs")
        idxs = list(range(layers)) if idxs is None else idxs
        if not isinstance(idxs, list) or not all(isinstance(i, int) for i in idxs):
            raise HFCheckpointError(f"{source}: 'full_attn_idxs' must be a list of layer indices")
        types = [LAYER_ATTENTION if i in idxs else LAYER_CONV for i in range(layers)]
    if not isinstance(types, list) or len(types) != layers:
        raise HFCheckpointError(f"{source}: 'layer_types' must list one type per layer ({layers}), got {types!r}"[:300])
    bad = sorted({t for t in types if t not in (LAYER_CONV, LAYER_ATTENTION)}, key=str)
    if bad:
        raise UnsupportedArchitectureError(f"{source}: layer types {bad} have no STAR mapping; "
                                           f"known: '{LAYER_CONV}' (GConv-1), '{LAYER_ATTENTION}' (grouped-query SA)")
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise HFCheckpointError(f"{source}: 'rope_parameters' must be an object, got {rope!r}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    theta = rope.get("rope_theta", cfg.get("rope_theta", 1e6))
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
        raise HFCheckpointError(f"{source}: rope_theta must be a number above 1, got {theta!r}")
    factor = None
    if rope_type == "linear":
        factor = rope.get("factor")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise HFCheckpointError(f"{source}: linear RoPE scaling needs a positive 'factor', got {factor!r}")
        factor = float(factor)
    elif rope_type != "default":
        raise UnsupportedArchitectureError(f"{source}: RoPE type {rope_type!r} is not supported; StarEdge maps "
                                           "'default' and 'linear' rotary embeddings")
    multiple_of = _get(cfg, "block_multiple_of", int, 256, source=source)
    ff = lfm2_ff_dim(_get(cfg, "intermediate_size", int, source=source),
                     _get(cfg, "block_auto_adjust_ff_dim", bool, True, source=source),
                     _get(cfg, "block_ffn_dim_multiplier", float, 1.0, source=source) if
                     cfg.get("block_ffn_dim_multiplier", 1.0) is not None else None,
                     max(1, multiple_of))
    if ff < 1:
        raise HFCheckpointError(f"{source}: the feed-forward width works out to {ff}; intermediate_size is too small")
    eos = cfg.get("eos_token_id", 2)
    eos = eos[0] if isinstance(eos, list) and eos else eos
    ids = {}
    for name, value in (("bos_token_id", cfg.get("bos_token_id", 1)), ("eos_token_id", eos),
                        ("pad_token_id", cfg.get("pad_token_id", 0))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise HFCheckpointError(f"{source}: '{name}' must be an integer or null, got {value!r}")
        ids[name] = value
    return LFM2Spec(
        vocab_size=_get(cfg, "vocab_size", int, source=source), hidden_size=hidden, layer_types=tuple(types),
        num_heads=heads, num_kv_heads=kv, ff_dim=ff,
        norm_eps=float(_get(cfg, "norm_eps", float, 1e-5, source=source)), rope_theta=float(theta),
        rope_factor=factor, conv_bias=_get(cfg, "conv_bias", bool, False, source=source),
        conv_kernel=_get(cfg, "conv_L_cache", int, 3, source=source),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", cfg.get("tie_embedding", True))),
        max_position_embeddings=_get(cfg, "max_position_embeddings", int, 128_000, source=source),
        bos_id=ids["bos_token_id"], eos_id=ids["eos_token_id"], pad_id=ids["pad_token_id"])


def lfm2_genome(spec: LFM2Spec) -> str:
    """The STAR genome of an LFM2 config: per layer its operator's class then GMemless (9)."""
    op = {LAYER_CONV: 7, LAYER_ATTENTION: spec.attention_class}
    return "-".join(f"{op[t]}-9" for t in spec.layer_types)


def lfm2_configs(spec: LFM2Spec) -> dict[int, LIVConfig]:
    """Operator choices of an LFM2 config, per LIV class used by :func:`lfm2_genome`."""
    configs = {9: LIVConfig(hidden_dim=spec.ff_dim)}
    if LAYER_CONV in spec.layer_types:
        configs[7] = LIVConfig(kernel_size=spec.conv_kernel, bias=True if spec.conv_bias else None)
    if LAYER_ATTENTION in spec.layer_types:
        configs[spec.attention_class] = LIVConfig(
            head_dim=spec.head_dim, repeat_factor=spec.num_heads // spec.num_kv_heads, qk_norm=True,
            norm_eps=spec.norm_eps, rope_base=spec.rope_theta, rope_factor=spec.rope_factor)
    return configs


def build_lfm2_model(spec: LFM2Spec, max_seq_len: int | None = None):
    """An untrained :class:`STARLanguageModel` with the architecture of ``spec``."""
    from staredge.models.star.backbone import STARLanguageModel

    ctx = spec.max_position_embeddings if max_seq_len is None else max_seq_len
    model = STARLanguageModel(
        spec.hidden_size, 2 * len(spec.layer_types), lfm2_genome(spec), vocab_size=spec.vocab_size,
        max_seq_len=ctx, tie_embeddings=spec.tie_embeddings, configs=lfm2_configs(spec), norm_eps=spec.norm_eps,
        special_ids={"bos_id": spec.bos_id, "eos_id": spec.eos_id, "pad_id": spec.pad_id})
    return model


# ----------------------------------------------------------------------------------------
# Tensor names: Hugging Face <-> STAR
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorMap:
    """One checkpoint tensor: its Hugging Face name and shape, the STAR tensors it becomes,
    and how (``copy``; ``split3``: rows split into B, C, x; ``conv``: [d, 1, k] <-> [d, k])."""

    hf_name: str
    shape: tuple[int, ...]
    star_names: tuple[str, ...]
    kind: str = "copy"


def tensor_maps(spec: LFM2Spec) -> list[TensorMap]:
    """Every tensor of an LFM2 checkpoint of this config, in checkpoint order."""
    d, ff = spec.hidden_size, spec.ff_dim
    maps = [TensorMap("model.embed_tokens.weight", (spec.vocab_size, d), ("embed.weight",))]
    for i, kind in enumerate(spec.layer_types):
        hf, op, mlp = f"model.layers.{i}", f"backbone.livs.{2 * i}", f"backbone.livs.{2 * i + 1}"
        if kind == LAYER_CONV:
            maps.append(TensorMap(f"{hf}.conv.in_proj.weight", (3 * d, d),
                                  tuple(f"{op}.featurizer.proj.{g}.weight" for g in "BCx"), "split3"))
            maps.append(TensorMap(f"{hf}.conv.conv.weight", (d, 1, spec.conv_kernel), (f"{op}.filter",), "conv"))
            maps.append(TensorMap(f"{hf}.conv.out_proj.weight", (d, d), (f"{op}.out.weight",)))
            if spec.conv_bias:
                maps.append(TensorMap(f"{hf}.conv.in_proj.bias", (3 * d,),
                                      tuple(f"{op}.featurizer.proj.{g}.bias" for g in "BCx"), "split3"))
                maps.append(TensorMap(f"{hf}.conv.conv.bias", (d,), (f"{op}.filter_bias",)))
                maps.append(TensorMap(f"{hf}.conv.out_proj.bias", (d,), (f"{op}.out.bias",)))
        else:
            hd, kvd = spec.head_dim, spec.num_kv_heads * spec.head_dim
            for g, rows in (("q", spec.num_heads * hd), ("k", kvd), ("v", kvd)):
                maps.append(TensorMap(f"{hf}.self_attn.{g}_proj.weight", (rows, d),
                                      (f"{op}.featurizer.proj.{g}.weight",)))
            maps.append(TensorMap(f"{hf}.self_attn.out_proj.weight", (d, spec.num_heads * hd), (f"{op}.out.weight",)))
            maps.append(TensorMap(f"{hf}.self_attn.q_layernorm.weight", (hd,), (f"{op}.q_norm.weight",)))
            maps.append(TensorMap(f"{hf}.self_attn.k_layernorm.weight", (hd,), (f"{op}.k_norm.weight",)))
        maps.append(TensorMap(f"{hf}.feed_forward.w1.weight", (ff, d), (f"{mlp}.featurizer.proj.gate.weight",)))
        maps.append(TensorMap(f"{hf}.feed_forward.w3.weight", (ff, d), (f"{mlp}.featurizer.proj.up.weight",)))
        maps.append(TensorMap(f"{hf}.feed_forward.w2.weight", (d, ff), (f"{mlp}.out.weight",)))
        maps.append(TensorMap(f"{hf}.operator_norm.weight", (d,), (f"backbone.norms.{2 * i}.weight",)))
        maps.append(TensorMap(f"{hf}.ffn_norm.weight", (d,), (f"backbone.norms.{2 * i + 1}.weight",)))
    maps.append(TensorMap("model.embedding_norm.weight", (d,), ("norm.weight",)))
    if not spec.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", (spec.vocab_size, d), ("head.weight",)))
    return maps


def _to_star(m: TensorMap, t):
    """The STAR tensors of one checkpoint tensor."""
    if m.kind == "split3":
        return dict(zip(m.star_names, t.chunk(3, dim=0)))
    if m.kind == "conv":
        return {m.star_names[0]: t.reshape(t.shape[0], t.shape[-1])}
    return {m.star_names[0]: t}


def _from_star(m: TensorMap, params: dict):
    """The checkpoint tensor of one :class:`TensorMap` from the model's tensors."""
    import torch

    parts = [params[n].detach() for n in m.star_names]
    if m.kind == "split3":
        return torch.cat(parts, dim=0)
    if m.kind == "conv":
        return parts[0].reshape(parts[0].shape[0], 1, parts[0].shape[1])
    return parts[0]


# ----------------------------------------------------------------------------------------
# Reading a folder safely
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor of a safetensors header: dtype, shape, byte range within the data."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_header(path: str | os.PathLike) -> dict[str, HeaderEntry]:
    """The tensors a safetensors file declares, checked against the file's size.

    Raises :class:`HFCheckpointError` naming the file for a file too short to be
    safetensors, a damaged header, and a truncated file (a tensor whose bytes lie past the
    end, named); :class:`TensorMismatchError` for a tensor whose byte range does not match
    its dtype and shape. Nothing but the header is read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise HFCheckpointError(f"{path} is {size} bytes: too short to be a safetensors file (truncated?)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                raise HFCheckpointError(f"{path}: its header claims {n:,} bytes but the file has {size:,}; the file "
                                        "is truncated or not safetensors")
            raw = fh.read(n)
    except OSError as exc:
        raise HFCheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFCheckpointError(f"{path}: the safetensors header is not valid JSON ({exc}); the file is damaged") from exc
    if not isinstance(header, dict):
        raise HFCheckpointError(f"{path}: the safetensors header is not a JSON object; the file is damaged")
    data_size = size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            start, end = int(start), int(end)
        except (KeyError, TypeError, ValueError) as exc:
            raise HFCheckpointError(f"{path}: header entry for tensor '{name}' is malformed ({exc})") from exc
        if end > data_size:
            raise HFCheckpointError(f"{path} is truncated: tensor '{name}' needs bytes up to {8 + n + end:,} but the "
                                    f"file has {size:,}; download or copy it again")
        item = FLOAT_DTYPES.get(dtype) or _OTHER_DTYPES.get(dtype)
        if item is not None and (end - start) != item * math.prod(shape):
            raise TensorMismatchError(f"{path}: tensor '{name}' declares {end - start} bytes for {dtype} {list(shape)}; "
                                      "the file is damaged", tensor=name, file=str(path))
        out[name] = HeaderEntry(str(dtype), shape, start, end)
    return out


def _weight_files(folder: Path) -> dict[str, Path]:
    """``{tensor name: file}`` from the index, or from every ``*.safetensors`` header."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            weight_map = data["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HFCheckpointError(f"{index} is not a valid shard index ({exc})") from exc
        files = {}
        for name, fname in weight_map.items():
            if not isinstance(fname, str) or Path(fname).name != fname or not fname.endswith(SAFETENSORS_SUFFIX):
                raise HFCheckpointError(f"{index}: tensor '{name}' points to {fname!r}, which is not a safetensors "
                                        "file in this folder")
            path = folder / fname
            if not path.is_file():
                raise HFCheckpointError(f"{index} lists shard {fname} (tensor '{name}') but {path} does not exist; "
                                        "the download is incomplete")
            files[name] = path
        return files
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
        if pickles:
            raise PickleWeightsRefusedError(
                f"{folder} holds weights only as {', '.join(pickles)} (pickle). StarEdge never unpickles a "
                "downloaded checkpoint (it can run code); nothing was read. Convert it once, where you trust it, "
                "with transformers: AutoModelForCausalLM.from_pretrained(folder).save_pretrained(out) (safetensors)")
        raise HFCheckpointError(f"{folder} has no model.safetensors (or shards with model.safetensors.index.json)")
    return {name: shard for shard in shards for name in read_safetensors_header(shard)}


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Hugging Face model folder of a supported ``model_type`` (a
    ``config.json`` that says so); for the CLI's model resolution. Never raises."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
        return isinstance(cfg, dict) and cfg.get("model_type") in SUPPORTED_MODEL_TYPES
    except (OSError, ValueError, TypeError):
        return False


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise HFCheckpointError(f"{folder} has no config.json: it is not a Hugging Face model folder")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HFCheckpointError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise HFCheckpointError(f"{path} must hold a JSON object")
    return cfg


def resolve_folder(path_or_repo: str | os.PathLike, revision: str | None = None,
                   endpoint: str | None = None) -> Path:
    """A local folder for ``path_or_repo``: the folder itself, or a hub id downloaded (safetensors
    and JSON only) into the ``huggingface_hub`` cache. Raises :class:`HFCheckpointError`."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_repo)
    if path.exists():
        raise HFCheckpointError(f"{path} is a file; from_pretrained takes a model folder (config.json + safetensors)")
    if not _REPO_ID.match(text) or text.startswith((".", "/")):
        raise HFCheckpointError(f"{text} is neither a folder nor a Hugging Face hub id (owner/name)")
    try:
        import huggingface_hub
    except ImportError as exc:
        from staredge.errors import MissingDependencyError

        raise MissingDependencyError(f"{text} is not a local folder; downloading it from the hub needs the Python "
                                     "package 'huggingface_hub' (pip install huggingface_hub)") from exc
    try:
        local = huggingface_hub.snapshot_download(text, revision=revision, allow_patterns=list(HUB_ALLOW_PATTERNS),
                                                  endpoint=endpoint)
    except Exception as exc:  # network, auth, missing repo: the library has many error types
        raise HFCheckpointError(f"cannot download {text} from the Hugging Face hub: {type(exc).__name__}: {exc}; "
                                "without network access, pass a local folder") from exc
    return Path(local)


def from_pretrained(path_or_repo: str | os.PathLike, *, max_seq_len: int | None = None, dtype=None,
                    revision: str | None = None, tokenizer: bool = True, allow_non_finite: bool = False):
    """Import a Hugging Face LFM2 folder (or hub id) as a :class:`STARLanguageModel`.

    Args:
        path_or_repo: a folder with ``config.json`` and ``model.safetensors`` (or shards and
            ``model.safetensors.index.json``), optionally ``tokenizer.json``,
            ``tokenizer_config.json``, ``generation_config.json``; or a hub id ``owner/name``
            (downloaded into the ``huggingface_hub`` cache; needs network access).
        max_seq_len: the model's context (default: the config's ``max_position_embeddings``).
        dtype: the model's parameter dtype (default float32; weights are cast to it).
        revision: hub revision (branch, tag or commit) for a hub id.
        tokenizer: load ``tokenizer.json`` into ``model.tokenizer`` (None when the folder has none).
        allow_non_finite: accept NaN/Inf weights (only to inspect a damaged checkpoint).

    Returns the model in eval mode with ``.tokenizer``, ``.hf_config`` (the config dict),
    ``.source`` (the folder) and ``.staredge_name`` set.

    Raises:
        HFCheckpointError: missing/damaged files, a truncated shard, a broken index.
        PickleWeightsRefusedError: the weights are a pickle (``.bin``); nothing was opened.
        UnsupportedArchitectureError: a ``model_type`` without a STAR mapping.
        TensorMismatchError: a missing, unexpected, wrongly shaped or non-float tensor.
        TokenizerError: a tokenizer that does not fit the vocabulary.
    """
    folder = resolve_folder(path_or_repo, revision)
    cfg = _read_config(folder)
    spec = parse_lfm2_config(cfg, str(folder / "config.json"))
    tok = None
    if tokenizer and (folder / "tokenizer.json").is_file():
        from staredge.tokenizer import HFTokenizer

        tok = HFTokenizer.from_folder(folder, vocab_size=spec.vocab_size, config=cfg)
    files = _weight_files(folder)
    headers: dict[Path, dict[str, HeaderEntry]] = {}
    for f in sorted(set(files.values())):
        headers[f] = read_safetensors_header(f)
    maps = tensor_maps(spec)
    expected = {m.hf_name: m for m in maps}
    for name, f in files.items():
        if name not in headers[f]:
            raise TensorMismatchError(f"{folder / 'model.safetensors.index.json'} puts tensor '{name}' in {f.name}, "
                                      f"but {f.name} does not hold it", tensor=name, file=str(f))
    # A tied checkpoint may still carry lm_head.weight (some writers save both): it is ignored.
    ignorable = {"lm_head.weight"} if spec.tie_embeddings else set()
    extra = sorted(n for n in files if n not in expected and n not in ignorable)
    if extra:
        raise TensorMismatchError(f"{files[extra[0]]} holds tensor '{extra[0]}' ({len(extra)} unexpected in all: "
                                  f"{', '.join(extra[:5])}) that an LFM2 model of this config.json does not have; "
                                  "the weights belong to another configuration", tensor=extra[0],
                                  file=str(files[extra[0]]))
    missing = [m.hf_name for m in maps if m.hf_name not in files]
    if missing:
        raise TensorMismatchError(f"{folder}: tensor '{missing[0]}' is missing from the weights ({len(missing)} missing "
                                  f"in all: {', '.join(missing[:5])}); the checkpoint is incomplete or of another "
                                  "configuration", tensor=missing[0])
    for m in maps:
        entry = headers[files[m.hf_name]][m.hf_name]
        if entry.shape != m.shape:
            raise TensorMismatchError(f"{files[m.hf_name]}: tensor '{m.hf_name}' has shape {list(entry.shape)}, but "
                                      f"config.json implies {list(m.shape)}", tensor=m.hf_name, file=str(files[m.hf_name]))
        if entry.dtype not in FLOAT_DTYPES:
            raise TensorMismatchError(f"{files[m.hf_name]}: tensor '{m.hf_name}' is {entry.dtype}; StarEdge imports "
                                      f"floating-point weights ({', '.join(FLOAT_DTYPES)}) only (a quantised checkpoint "
                                      "needs its scales applied first)", tensor=m.hf_name, file=str(files[m.hf_name]))
    model = build_lfm2_model(spec, max_seq_len)
    if dtype is not None:
        model = model.to(dtype)
    _load_tensors(model, maps, files, allow_non_finite)
    model.eval()
    model.tokenizer = tok
    model.hf_config = cfg
    model.source = str(folder)
    model.staredge_name = str(cfg.get("_name_or_path") or folder.name or "lfm2")
    return model


def _load_tensors(model, maps: list[TensorMap], files: dict[str, Path], allow_non_finite: bool) -> None:
    """Copy each checkpoint tensor into the model's parameters, one file open at a time."""
    import torch
    from safetensors import SafetensorError, safe_open

    params = dict(model.named_parameters(remove_duplicate=False))
    by_file: dict[Path, list[TensorMap]] = {}
    for m in maps:
        by_file.setdefault(files[m.hf_name], []).append(m)
    with torch.no_grad():
        for f, group in by_file.items():
            try:
                with safe_open(str(f), framework="pt") as fh:
                    for m in group:
                        t = fh.get_tensor(m.hf_name)
                        if not allow_non_finite and not bool(torch.isfinite(t).all()):
                            raise TensorMismatchError(f"{f}: tensor '{m.hf_name}' holds NaN or Inf values; the file "
                                                      "is damaged (pass allow_non_finite=True only to inspect it)",
                                                      tensor=m.hf_name, file=str(f))
                        for name, part in _to_star(m, t).items():
                            params[name].copy_(part.to(params[name].dtype))
            except (SafetensorError, OSError) as exc:
                raise HFCheckpointError(f"cannot read {f}: {exc}; the file is damaged") from exc


# ----------------------------------------------------------------------------------------
# Writing a folder
# ----------------------------------------------------------------------------------------


def spec_of_model(model) -> LFM2Spec:
    """The :class:`LFM2Spec` of a STAR model that an LFM2 config can express: LIVs in pairs
    (GConv-1 or one attention class, then GMemless), no sharing, q/k norm on. Raises
    :class:`ConfigError` saying what does not fit."""
    from staredge.models.star.config import attention_shape, short_kernel, swiglu_hidden

    g = model.backbone.genome
    if len(g) % 2:
        raise ConfigError(f"an LFM2 layer is two LIVs (operator, SwiGLU); this genome has {len(g)}")
    types, att_class = [], None
    for i, seg in enumerate(g):
        if seg.as_tuple()[2] != 1 or seg.as_tuple()[4] != 1 or seg.residual_group:
            raise ConfigError(f"LIV {i + 1} shares weights or features; LFM2 has no sharing")
        cls = seg.liv_class
        if i % 2:
            if cls != 9:
                raise ConfigError(f"LIV {i + 1} is {seg.name}; every second LIV of an LFM2 model is GMemless (9)")
        elif cls == 7:
            types.append(LAYER_CONV)
        elif cls in (1, 3, 4) and att_class in (None, cls):
            types.append(LAYER_ATTENTION)
            att_class = cls
        else:
            raise ConfigError(f"LIV {i + 1} is {seg.name}; an LFM2 operator is GConv-1 (7) or one attention class")
    cfgs = model.backbone.configs
    d = model.dim
    heads, kv, eps, theta, factor = d // C.HEAD_DIM or 1, 1, model.norm_eps, C.ROPE_BASE, None
    if att_class is not None:
        c = cfgs.get(att_class, LIVConfig())
        if not c.qk_norm:
            raise ConfigError("LFM2 attention normalises q and k per head; this model's attention has no qk_norm")
        s = attention_shape(att_class, d, c)
        heads, kv = s.heads, s.kv_heads
        eps = C.NORM_EPS if c.norm_eps is None else c.norm_eps
        theta, factor = c.rope_base or C.ROPE_BASE, c.rope_factor
    gc = cfgs.get(7, LIVConfig())
    return LFM2Spec(
        vocab_size=model.vocab_size, hidden_size=d, layer_types=tuple(types), num_heads=heads, num_kv_heads=kv,
        ff_dim=swiglu_hidden(d, cfgs.get(9, LIVConfig())), norm_eps=float(eps), rope_theta=float(theta),
        rope_factor=factor, conv_bias=bool(gc.bias), conv_kernel=short_kernel(7, gc),
        tie_embeddings=model.tie_embeddings, max_position_embeddings=model.max_seq_len,
        bos_id=model.bos_id, eos_id=model.eos_id, pad_id=model.pad_id)


def lfm2_config_dict(spec: LFM2Spec, base: dict | None = None) -> dict:
    """An LFM2 ``config.json`` dict for ``spec`` (keys of ``base`` that the spec does not
    decide are kept). The feed-forward width is written as-is (no auto-adjust)."""
    cfg = dict(base or {})
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rope_factor is not None:
        rope = {"rope_type": "linear", "rope_theta": spec.rope_theta, "factor": spec.rope_factor}
    cfg.pop("full_attn_idxs", None)
    cfg.pop("rope_scaling", None)
    adjust = bool(cfg.get("block_auto_adjust_ff_dim", False))
    same_ff = adjust and lfm2_ff_dim(cfg.get("intermediate_size", 0), True, cfg.get("block_ffn_dim_multiplier", 1.0),
                                     cfg.get("block_multiple_of", 256)) == spec.ff_dim
    if not same_ff:  # write the exact width
        cfg.update(intermediate_size=spec.ff_dim, block_auto_adjust_ff_dim=False)
    cfg.update({
        "architectures": ["Lfm2ForCausalLM"], "model_type": "lfm2", "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size, "num_hidden_layers": len(spec.layer_types),
        "num_attention_heads": spec.num_heads, "num_key_value_heads": spec.num_kv_heads,
        "layer_types": list(spec.layer_types), "norm_eps": spec.norm_eps, "rope_parameters": rope,
        "conv_bias": spec.conv_bias, "conv_L_cache": spec.conv_kernel, "tie_word_embeddings": spec.tie_embeddings,
        "max_position_embeddings": spec.max_position_embeddings, "bos_token_id": spec.bos_id,
        "eos_token_id": spec.eos_id, "pad_token_id": spec.pad_id,
    })
    cfg.setdefault("dtype", "float32")
    return cfg


def save_pretrained(model, folder: str | os.PathLike, *, force: bool = False, tokenizer=None,
                    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write ``model`` as a Hugging Face LFM2 folder that :func:`from_pretrained` and
    transformers' ``Lfm2ForCausalLM.from_pretrained`` read.

    Writes ``config.json``, ``model.safetensors`` (or shards of at most ``max_shard_bytes``
    with ``model.safetensors.index.json``), ``generation_config.json`` and, when there is a
    tokenizer (``tokenizer`` or ``model.tokenizer``, an :class:`~staredge.tokenizer.HFTokenizer`),
    ``tokenizer.json`` and ``tokenizer_config.json``. The folder is staged and moved into
    place at the end; an existing folder is an :class:`ArtifactExistsError` unless ``force``.
    """
    import shutil
    import tempfile

    from safetensors.torch import save_file

    from staredge.errors import ArtifactExistsError
    from staredge.fileio import replace_folder_or_file

    folder = Path(folder)
    if folder.exists() and not force:
        raise ArtifactExistsError(f"{folder} exists; pass force=True to overwrite it")
    if not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ConfigError(f"max_shard_bytes must be a positive integer, got {max_shard_bytes!r}")
    spec = spec_of_model(model)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {m.hf_name: _from_star(m, params).contiguous().clone() for m in tensor_maps(spec)}
    shards: list[dict] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        staged = scratch / "staged"
        staged.mkdir()
        meta = {"format": "pt"}
        if len(shards) == 1:
            save_file(shards[0], str(staged / "model.safetensors"), metadata=meta)
        else:
            weight_map = {}
            for k, shard in enumerate(shards, 1):
                fname = f"model-{k:05d}-of-{len(shards):05d}{SAFETENSORS_SUFFIX}"
                save_file(shard, str(staged / fname), metadata=meta)
                weight_map.update({n: fname for n in shard})
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            _write_json(staged / "model.safetensors.index.json", {"metadata": {"total_size": total},
                                                                  "weight_map": weight_map})
        _write_json(staged / "config.json", lfm2_config_dict(spec, getattr(model, "hf_config", None)))
        gen = {"bos_token_id": spec.bos_id, "eos_token_id": spec.eos_id, "pad_token_id": spec.pad_id}
        if tok is not None:
            from staredge.tokenizer import HFTokenizer

            if not isinstance(tok, HFTokenizer):
                raise TokenizerError(f"save_pretrained writes a Hugging Face tokenizer.json; got {type(tok).__name__}")
            stops = sorted(tok.stop_ids)
            gen["eos_token_id"] = stops if len(stops) > 1 else (stops[0] if stops else spec.eos_id)
            d = tok.to_dict()
            (staged / "tokenizer.json").write_text(d["tokenizer_json"], encoding="utf-8")
            tcfg = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": bool(d["add_bos"]),
                    "bos_token": tok.id_to_token(tok.bos_id) if tok.bos_id is not None else None,
                    "eos_token": tok.id_to_token(tok.eos_id) if tok.eos_id is not None else None,
                    "pad_token": tok.id_to_token(tok.pad_id) if tok.pad_id is not None else None}
            if d["chat_template"]:
                tcfg["chat_template"] = d["chat_template"]
            _write_json(staged / "tokenizer_config.json", tcfg)
        _write_json(staged / "generation_config.json", gen)
        replace_folder_or_file(staged, folder, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = ["from_pretrained", "save_pretrained", "is_hf_folder", "parse_lfm2_config", "LFM2Spec", "lfm2_ff_dim",
           "lfm2_genome", "lfm2_configs", "build_lfm2_model", "tensor_maps", "TensorMap", "read_safetensors_header",
           "resolve_folder", "spec_of_model", "lfm2_config_dict", "SUPPORTED_MODEL_TYPES"]
