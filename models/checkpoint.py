"""Safe checkpoint loading: official ``.pth.tar``, plain ``.pth`` state_dicts and safetensors.

Nothing here unpickles arbitrary objects. PyTorch files are read with
``torch.load(weights_only=True)``; the only extra class allowed is
``argparse.Namespace``, which the official StarNet release stores under ``args``.
A file that needs anything else is refused with :class:`UnsafeCheckpointError`
before any of its code can run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn as nn

from staredge.errors import CheckpointError, UnsafeCheckpointError

#: Classes (besides tensors and plain containers) that official checkpoints need.
SAFE_GLOBALS: tuple[type, ...] = (argparse.Namespace,)

#: Keys under which training scripts nest the weights, in order of preference.
_NESTED_KEYS = ("state_dict", "model", "module", "state_dict_ema", "model_ema")

_SAFETENSORS_SUFFIXES = (".safetensors",)


def _is_safetensors(path: Path) -> bool:
    if path.suffix in _SAFETENSORS_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: little-endian u64 header length followed by a JSON object
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file without building a model.

    Accepts safetensors, a plain state_dict saved with ``torch.save`` and training
    checkpoints that nest the weights (``state_dict``/``model``/...). Strips a leading
    ``module.`` (DataParallel) from every key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}")
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc
    else:
        sd = _torch_load_safe(path)
    return _strip_prefix(sd, "module.")


def _torch_load_safe(path: Path) -> dict[str, torch.Tensor]:
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            import re

            found = re.search(r"GLOBAL ([\w.]+)", msg)
            what = f"it needs '{found.group(1)}'" if found else "it needs an object outside the allow-list"
            raise UnsafeCheckpointError(
                f"refused to load {path}: {what}, which is outside StarEdge's allow-list of pickled "
                f"objects. Nothing from it was executed. If you trust the file, re-save its "
                f"tensors as safetensors; only tensors, containers and argparse.Namespace are accepted."
            ) from exc
        raise CheckpointError(f"cannot read checkpoint {path}: {msg.splitlines()[0] if msg else exc}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a PyTorch file?): {exc}") from exc
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


def _fmt(keys: Iterable[str], limit: int = 20) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name prefixes of a model's classifier head(s) (``model.head_names`` or ``head``)."""
    return tuple(f"{n}." for n in getattr(model, "head_names", ("head",)))


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, drop_head: bool = False) -> nn.Module:
    """Load ``state_dict`` into ``model`` strictly, raising a :class:`CheckpointError` that lists
    every missing key, unexpected key and shape mismatch.

    If the model defines ``filter_checkpoint(state_dict)`` (a family's checkpoint filter, e.g.
    mapping timm's layout onto ours) it is applied first. With ``drop_head=True`` the
    checkpoint's classifier head is ignored and the model keeps its own (e.g. a different
    number of classes).
    """
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
            hint = " The mismatch is only in the classifier head: pass num_classes=... / drop_head=True to replace it."
        name = getattr(model, "staredge_name", type(model).__name__)
        raise CheckpointError(f"checkpoint does not fit {name}: " + "; ".join(parts) + "." + hint)
    model.load_state_dict(sd, strict=not drop_head)
    after = getattr(model, "after_load", None)
    if callable(after):
        after()
    return model


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, drop_head: bool = False) -> nn.Module:
    """Load a checkpoint file into ``model`` (see :func:`read_state_dict`, :func:`load_state_dict`).

    Records the file's SHA-256 on ``model.checkpoint_sha256`` (exporters embed it).
    """
    sd = read_state_dict(path)
    load_state_dict(model, sd, drop_head=drop_head)
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
