"""Safe checkpoint loading: official ``.pth.tar``, plain ``.pth`` state_dicts and safetensors.

Nothing here unpickles arbitrary objects. PyTorch files are read with
``torch.load(weights_only=True)``; the only extra class allowed is
``argparse.Namespace``, which the official StarNet release stores under ``args``.
A file that needs anything else is refused with :class:`UnsafeCheckpointError`
before any of its code can run; the message names the object it asked for (found by
reading the pickle's opcodes with :mod:`pickletools`, which never executes anything).
A file that is not a checkpoint at all (random bytes, a damaged archive) is a plain
:class:`CheckpointError` that says so.

Loading also refuses weights that would silently change meaning: non-finite values
(NaN/Inf) and integer or 8-bit float tensors going into floating-point parameters.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from staredge.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from staredge.formats import checkpoint_format

#: Classes (besides tensors and plain containers) that official checkpoints need.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

#: Keys under which training scripts nest the weights, in order of preference.
_NESTED_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")

#: Checkpoint suffixes that are not pickles (the format table's PyTorch checkpoint spec).
_SAFETENSORS_SUFFIXES = tuple(s for s in checkpoint_format().suffixes if s not in checkpoint_format().pickle_suffixes)

#: What torch's weights-only unpickler and its archive reader raise for damaged or forged
#: files (found by mutation fuzzing, scripts/fuzz.py): turned into :class:`CheckpointError`.
#: MemoryError comes from length fields that ask for more bytes than exist.
_TORCH_LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError,
                      TypeError, AssertionError, struct.error, zipfile.BadZipFile, MemoryError, OverflowError,
                      NotImplementedError)

#: Floating dtypes a checkpoint tensor may be cast between when loaded into a model.
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Most bytes of a pickle stream read to name the object a refused checkpoint needs.
_SCAN_LIMIT = 64 << 20

#: Size caps on a zip checkpoint (``torch.save``'s layout), checked in the archive's directory
#: before torch reads it: torch inflates every entry to its declared size, so a 1.5 MB file of
#: deflated zeros became 1.77 GB of memory before any other check (issue 23). ``torch.save``
#: stores entries uncompressed (a real checkpoint inflates about 1:1), so the declared total
#: may be at most :data:`MAX_ARCHIVE_INFLATION` times the file size, or
#: :data:`MIN_ARCHIVE_CAP` when that is larger (small re-zipped files stay loadable).
MAX_ARCHIVE_INFLATION = 16
MIN_ARCHIVE_CAP = 64 << 20
#: With a model to load into (:func:`load_checkpoint`), the declared total may also be at most
#: this many times the model's own state (weights + EMA copy + optimizer moments fit easily).
MAX_MODEL_FACTOR = 8


def _is_safetensors(path: Path) -> bool:
    if path.suffix in _SAFETENSORS_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: little-endian u64 header length followed by a JSON object
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_state_dict(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file without building a model.

    Accepts safetensors, a plain state_dict saved with ``torch.save`` and training
    checkpoints that nest the weights (``state_dict``/``model``/...). Strips a leading
    ``module.`` (DataParallel) from every key. A zip checkpoint whose entries declare more
    bytes than :func:`archive_cap` allows (a compression bomb), or more than ``max_bytes``
    when given, is refused from its directory before anything is inflated.
    """
    path = _as_path(path)
    st = _stat_checkpoint(path)
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"checkpoint not found: {path} is not a file")
    if st.st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError, TypeError, MemoryError, OverflowError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: it is damaged or not a "
                                  f"safetensors file ({exc})") from exc
    else:
        check_archive_sizes(path, st.st_size, max_bytes)
        sd = _torch_load_safe(path)
    return _strip_prefix(sd, "module.")


def archive_cap(file_size: int, max_bytes: int | None = None) -> int:
    """The most bytes a zip checkpoint of ``file_size`` bytes may declare (see
    :data:`MAX_ARCHIVE_INFLATION`, :data:`MIN_ARCHIVE_CAP`; ``max_bytes`` lowers it)."""
    cap = max(MIN_ARCHIVE_CAP, MAX_ARCHIVE_INFLATION * int(file_size))
    return cap if max_bytes is None else min(cap, max(int(max_bytes), 1))


def check_archive_sizes(path: Path, file_size: int, max_bytes: int | None = None) -> None:
    """Refuse a zip checkpoint whose directory declares more uncompressed bytes than
    :func:`archive_cap` allows, before torch inflates anything (:class:`CheckpointError`).
    Not a zip archive (legacy ``torch.save``, raw pickle): nothing to check here, the file's
    own size bounds what it holds."""
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, RuntimeError):
        return  # a damaged directory: torch's reader reports it as a damaged checkpoint
    declared = sum(max(int(i.file_size), 0) for i in infos)
    cap = archive_cap(file_size, max_bytes)
    if declared > cap:
        why = (f"MAX_ARCHIVE_INFLATION={MAX_ARCHIVE_INFLATION}x the file's {file_size:,} bytes, at least "
               f"MIN_ARCHIVE_CAP={MIN_ARCHIVE_CAP >> 20} MiB")
        if max_bytes is not None and cap == max(int(max_bytes), 1):
            why = f"MAX_MODEL_FACTOR={MAX_MODEL_FACTOR}x the model's own weights, at least {MIN_ARCHIVE_CAP >> 20} MiB"
        raise CheckpointError(
            f"refused to load {path}: its zip entries declare {declared:,} uncompressed bytes, over the cap of "
            f"{cap:,} ({why}); it is a compression bomb or not a checkpoint for this model. Nothing was "
            f"inflated. Re-save the weights with torch.save(state_dict) or as safetensors")


def _as_path(path) -> Path:
    """``path`` as a Path, or :class:`ConfigError` for something that is not a path."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"a checkpoint is given as a path (str or os.PathLike), got {type(path).__name__} "
                          f"{str(path)[:60]}")
    try:
        return Path(path)
    except TypeError as exc:  # an os.PathLike whose __fspath__ returns something else
        raise ConfigError(f"a checkpoint is given as a path, got {type(path).__name__} ({exc})") from exc


def _stat_checkpoint(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except ValueError as exc:  # embedded NUL byte
        raise CheckpointError(f"checkpoint path {str(path)[:200]!r} is not a valid path ({exc})") from exc
    except OSError as exc:
        why = {errno.ENAMETOOLONG: "the path is longer than the file system allows",
               errno.ELOOP: "it is a symbolic link loop",
               errno.EACCES: "permission denied"}.get(exc.errno, exc.strerror or str(exc))
        shown = str(path) if len(str(path)) <= 200 else f"{str(path)[:100]}...({len(str(path))} characters)"
        raise CheckpointError(f"cannot read checkpoint {shown}: {why}") from exc


def _pickle_globals(data: bytes) -> tuple[list[str], bool]:
    """Every global (``module.name``) a pickle stream references, read with pickletools
    (nothing is executed), and whether the bytes parse as pickles at all. Several pickles
    in a row (the legacy torch.save layout) are read one after another."""
    found: list[str] = []
    buf = io.BytesIO(data[:_SCAN_LIMIT])
    parsed_any = False
    while buf.tell() < len(buf.getbuffer()):
        strings: list[str] = []  # recent string pushes: STACK_GLOBAL takes module and name from them
        memo: dict[int, str] = {}
        try:
            for op, arg, _ in pickletools.genops(buf):
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", ".").replace("__builtin__.", "builtins."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}".replace("__builtin__.", "builtins."))
                elif isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                    strings.append(arg)
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                    memo[int(arg)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    strings.append(memo[int(arg)])
            parsed_any = True
        except (ValueError, EOFError, UnicodeDecodeError, struct.error, KeyError, IndexError, TypeError):
            break
    return found, parsed_any


def _pickle_bytes(path: Path) -> bytes:
    """The pickle stream of a checkpoint: ``data.pkl`` of a zip archive, else the file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if names and zf.getinfo(names[0]).file_size <= _SCAN_LIMIT:
                    return zf.read(names[0])
                return b""
        with open(path, "rb") as fh:
            return fh.read(_SCAN_LIMIT)
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, EOFError, NotImplementedError, RuntimeError):
        return b""


def _is_allowed_global(name: str) -> bool:
    """Whether torch's weights-only loader (plus :data:`SAFE_GLOBALS`) accepts ``name``; used
    only to name the culprit in a refusal, never to decide what is loaded."""
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS}
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed |= set(_get_allowed_globals())
    except (ImportError, AttributeError, TypeError):  # private API: fall back to the torch namespace
        return name in allowed or name.startswith("torch.") or name == "collections.OrderedDict"
    return name in allowed


def _refusal(path: Path, exc: Exception) -> CheckpointError:
    """The error for a file torch's weights-only loader refused: unsafe (naming the object
    it needs), or simply not a checkpoint."""
    names, parsed = _pickle_globals(_pickle_bytes(path))
    foreign = list(dict.fromkeys(n for n in names if not _is_allowed_global(n)))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" (+{len(foreign) - 5} more)" if len(foreign) > 5 else "")
        return UnsafeCheckpointError(
            f"refused to load {path}: it needs {shown}, which is outside StarEdge's allow-list of pickled "
            f"objects. Nothing from it was executed. If you trust the file, re-save its "
            f"tensors as safetensors; only tensors, containers and argparse.Namespace are accepted.")
    msg = str(exc)
    detail = next((ln.strip() for ln in msg.splitlines() if "WeightsUnpickler error" in ln or "Unsupported" in ln), "")
    if not parsed:
        return CheckpointError(
            f"{path} is not a checkpoint: it is neither a PyTorch file (zip archive or pickle) nor safetensors, "
            f"or it is damaged; check that it is the right file and re-download it")
    return CheckpointError(
        f"cannot read checkpoint {path}: it is a pickle that torch's safe loader does not accept "
        f"({detail or msg.splitlines()[0] if msg else type(exc).__name__}); nothing from it was executed. "
        f"Re-save it with torch.save(state_dict) or as safetensors")


def _torch_load_safe(path: Path) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(path, exc) from exc
    except _TORCH_LOAD_ERRORS as exc:
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is truncated, damaged or not a PyTorch file ({text}); "
            f"re-download it") from exc
    return _extract_state_dict(obj, path)


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(f"{path} holds no state_dict (top-level keys: {keys})")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict")


def _strip_prefix(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


#: ``guess(state_dict, exclude=name) -> (registry name, share matched) | None``, set by
#: :mod:`staredge.models.registry` (which imports this module, so this one cannot import it):
#: names the model a checkpoint of another architecture looks like.
architecture_guesser: "Callable[..., tuple[str, float] | None] | None" = None


def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of a model's classifier head(s) (``model.head_names`` or ``head``)."""
    return tuple(f"{n}." for n in getattr(model, "head_names", ("head",)))


def check_tensors(model: nn.Module, sd: Mapping[str, torch.Tensor], allow_non_finite: bool = False) -> None:
    """Refuse tensors that would silently change meaning when loaded into ``model``.

    - non-finite values (NaN, +-Inf) in a floating tensor, unless ``allow_non_finite``;
    - a dtype the model's tensor cannot take without losing meaning: integer, bool, 8-bit
      float or quantized data going into a floating-point parameter (a quantized checkpoint
      needs its scales applied, which a cast does not do), or float data into an integer buffer.
      Casts among float16/bfloat16/float32/float64 and among integer types are fine.
    """
    own = model.state_dict()
    bad_dtype, non_finite = [], []
    for k, v in sd.items():
        if k not in own or not isinstance(v, torch.Tensor):
            continue
        want = own[k].dtype
        if v.dtype != want:
            both_float = v.dtype in _FLOAT_DTYPES and want in _FLOAT_DTYPES
            both_int = (not v.dtype.is_floating_point and not v.dtype.is_complex and v.dtype != torch.bool
                        and not want.is_floating_point and not want.is_complex and want != torch.bool
                        and not v.is_quantized)
            if not (both_float or both_int):
                bad_dtype.append(f"{k} ({str(v.dtype).replace('torch.', '')} -> {str(want).replace('torch.', '')})")
        if not allow_non_finite and v.dtype in _FLOAT_DTYPES and v.numel():
            finite = torch.isfinite(v)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(v).sum())
                non_finite.append(f"{k} ({n_nan} NaN, {int((~finite).sum()) - n_nan} Inf of {v.numel()})")
    name = getattr(model, "staredge_name", type(model).__name__)
    if bad_dtype:
        raise CheckpointError(
            f"checkpoint tensors have dtypes {name} cannot take without changing their meaning: {_fmt(bad_dtype, 8)}. "
            f"Integer, 8-bit float and quantized weights are not cast silently; dequantize them (apply their "
            f"scales) and save float weights")
    if non_finite:
        raise CheckpointError(
            f"checkpoint has non-finite weights (NaN or Inf) in {len(non_finite)} tensor(s): {_fmt(non_finite, 8)}; "
            f"the file is damaged or training diverged. Pass allow_non_finite=True only to inspect it")


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, drop_head: bool = False,
                    allow_non_finite: bool = False) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly, raising a :class:`CheckpointError` that lists
    every missing key, unexpected key and shape mismatch, and refusing NaN/Inf weights and
    dtypes that a cast would change the meaning of (see :func:`check_tensors`).

    If the model defines ``filter_checkpoint(state_dict)`` (a family's checkpoint filter, e.g.
    mapping timm's layout onto ours) it is applied first. With ``drop_head=True`` the
    checkpoint's classifier head is ignored and the model keeps its own (e.g. a different
    number of classes).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"load_state_dict needs a torch.nn.Module to load into, got {type(model).__name__}")
    if not isinstance(state_dict, Mapping):
        raise ConfigError(f"a state_dict is a mapping of names to tensors, got {type(state_dict).__name__}")
    sd = dict(state_dict)
    filt = getattr(model, "filter_checkpoint", None)
    if callable(filt):
        sd = filt(sd)
    own = model.state_dict()
    heads = head_prefixes(model)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(heads)}
    missing = [k for k in own if k not in sd and not (drop_head and k.startswith(heads))]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_fmt(mismatched)}")
        hint = ""
        if mismatched and all(m.startswith(heads) for m in mismatched):
            hint = " The mismatch is only in the classifier head: pass num_classes=N (--num-classes N on the command line) to replace it, or drop_head=True."
        name = getattr(model, "staredge_name", type(model).__name__)
        if len(missing) + len(mismatched) > len(own) // 2:  # another architecture: say which, not every key
            guess = architecture_guesser(state_dict, exclude=name) if architecture_guesser else None
            like = (f"it looks like a checkpoint of {guess[0]} ({guess[1]:.0%} of its parameters match): pass "
                    f"--model {guess[0]} (create('{guess[0]}', checkpoint=...))" if guess else
                    "it matches no registered model")
            short = [f"{label} ({len(keys)}): {_fmt(keys, 3)}" for label, keys in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                     if keys]
            raise CheckpointError(f"checkpoint does not fit {name}: {like}. " + "; ".join(short))
        raise CheckpointError(f"checkpoint does not fit {name}: " + "; ".join(parts) + "." + hint)
    check_tensors(model, sd, allow_non_finite=allow_non_finite)
    model.load_state_dict(sd, strict=not drop_head)
    after = getattr(model, "after_load", None)
    if callable(after):
        after()
    return model


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, drop_head: bool = False,
                    allow_non_finite: bool = False) -> nn.Module:
    """Load a checkpoint file into ``model`` (see :func:`read_state_dict`, :func:`load_state_dict`).

    Records the file's SHA-256 on ``model.checkpoint_sha256`` (exporters embed it). A zip
    checkpoint may declare at most :data:`MAX_MODEL_FACTOR` times the model's own state
    (and :data:`MIN_ARCHIVE_CAP` at least) before it is read.
    Raises :class:`~staredge.errors.ConfigError` when ``path`` is not a path.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"load_checkpoint needs a torch.nn.Module to load into, got {type(model).__name__}")
    path = _as_path(path)
    own = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    sd = read_state_dict(path, max_bytes=max(MIN_ARCHIVE_CAP, MAX_MODEL_FACTOR * own))
    load_state_dict(model, sd, drop_head=drop_head, allow_non_finite=allow_non_finite)
    model.checkpoint_sha256 = file_sha256(path)
    return model


def save_safetensors(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write ``model``'s state_dict as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
