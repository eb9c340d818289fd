"""Saved STAR language models and the user-facing :class:`LanguageModel`.

:func:`save_lm` writes ``<name>.safetensors`` + ``<name>.json``; :func:`load_lm` reads a pair
(or the shipped ``star_lm_pydoc``) back; :class:`LanguageModel` bundles a model with the
byte tokenizer: ``lm.stream(prompt, ...)`` / ``lm.generate(prompt, ...)`` through the one
decode loop (:func:`staredge.decoding.stream`). ``staredge.load_lm``,
``staredge.LanguageModel`` and ``from staredge.generation import load_lm, save_lm,
LanguageModel`` keep working (lazy re-exports: this module needs torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from staredge.decoding import TextStream, _model_context, stream
from staredge.errors import CheckpointError, ConfigError, StarEdgeError
from staredge.fileio import atomic_write_bytes
from staredge.formats import checkpoint_format
from staredge.tokenizer import ByteTokenizer

#: Name of the STAR model shipped inside the package (files ``staredge/data/<name>.*``).
DEFAULT_LM_NAME = "star_lm_pydoc"

#: ``format`` value of the JSON file that sits next to a saved STAR LM's weights.
LM_FORMAT = "staredge-star-lm"
LM_FORMAT_VERSION = 1


def _data_dir() -> Path:
    """The package's data folder (``staredge/data``), where the shipped models live."""
    import staredge

    return Path(staredge.__file__).resolve().parent / "data"




def save_lm(model: Any, path: str | os.PathLike, info: dict[str, Any] | None = None, force: bool = False) -> tuple[Path, Path]:
    """Save a ``STARLanguageModel`` as ``<path>.safetensors`` plus ``<path>.json``.

    ``path`` is the common stem (a ``.safetensors``/``.json`` suffix is dropped). The JSON
    holds ``model.config_dict()``, the weights' SHA-256 and ``info`` (anything JSON-able, e.g.
    training settings and results). Both files are written atomically; existing files are
    only replaced with ``force=True``. Returns (weights path, config path).
    """
    from staredge.models.checkpoint import file_sha256, save_safetensors

    weights_suffix = checkpoint_format().primary_suffix
    stem = Path(path)
    if stem.suffix in (weights_suffix, ".json"):
        stem = stem.with_suffix("")
    weights, config = stem.with_name(stem.name + weights_suffix), stem.with_name(stem.name + ".json")
    for p in (weights, config):
        if p.exists() and not force:
            raise ConfigError(f"{p} already exists; pass force=True to replace it")
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, weights, metadata={"format": LM_FORMAT})
    doc = {
        "format": LM_FORMAT,
        "format_version": LM_FORMAT_VERSION,
        "name": stem.name,
        "weights": weights.name,
        "weights_sha256": file_sha256(weights),
        "model": model.config_dict(),
        "info": info or {},
    }
    atomic_write_bytes(config, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    return weights, config


def _resolve_lm_files(name_or_path: str | os.PathLike | None) -> tuple[Path, Path]:
    """(weights, config) for a shipped model name, a stem, either file, or a folder."""
    if name_or_path is None:
        name_or_path = DEFAULT_LM_NAME
    raw = str(name_or_path)
    weights_suffix = checkpoint_format().primary_suffix
    shipped = _data_dir() / raw
    if not any(sep in raw for sep in ("/", os.sep)) and shipped.with_name(raw + ".json").is_file():
        stem = shipped
    else:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            found = [f for f in found if f.with_suffix(weights_suffix).is_file()]
            if len(found) != 1:
                raise CheckpointError(
                    f"{p} must hold exactly one <name>.json + <name>.safetensors pair (found {len(found)})")
            stem = found[0].with_suffix("")
        elif p.suffix in (".json", weights_suffix):
            stem = p.with_suffix("")
        else:
            stem = p
    config = stem.with_name(stem.name + ".json")
    if not config.is_file():
        shipped_names = sorted(f.stem for f in _data_dir().glob("star_lm*.json"))
        raise CheckpointError(
            f"no language model at {raw!r}: expected {config} (and its .safetensors). "
            f"Shipped models: {', '.join(shipped_names) or 'none'}; or pass a path saved with save_lm()."
        )
    return stem.with_name(stem.name + weights_suffix), config


def load_lm(name_or_path: str | os.PathLike | None = None) -> "LanguageModel":
    """Load a saved STAR language model; None (or ``"star_lm_pydoc"``) is the shipped one.

    Accepts a shipped model's name, the stem of a ``save_lm`` pair, either of its two files,
    a folder holding exactly one pair, or a Hugging Face STAR-family folder (LFM2:
    ``config.json``, safetensors, ``tokenizer.json``; see :func:`staredge.models.star.lfm2.from_pretrained`). Weights are read with safetensors (no pickle).
    """
    from staredge.models.checkpoint import file_sha256, load_checkpoint
    from staredge.models.star import STARLanguageModel
    from staredge.models.star.lfm2 import from_pretrained, is_hf_folder

    if name_or_path is not None and Path(name_or_path).is_dir() and is_hf_folder(name_or_path):
        # A Hugging Face STAR-family folder (LFM2): imported as a genome, its own tokenizer.
        imported = from_pretrained(name_or_path)
        return LanguageModel(imported, name=Path(name_or_path).name, tokenizer=getattr(imported, "tokenizer", None))
    weights, config = _resolve_lm_files(name_or_path)
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the model config {config}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != LM_FORMAT or "model" not in doc:
        raise CheckpointError(f"{config} is not a StarEdge STAR-LM config (expected \"format\": \"{LM_FORMAT}\")")
    if not weights.is_file():
        raise CheckpointError(f"the weights file {weights} named by {config} is missing")
    expected = doc.get("weights_sha256")
    if expected and file_sha256(weights) != expected:
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in {config}; the file is corrupt or was replaced")
    try:
        model = STARLanguageModel.from_config_dict(doc["model"])
    except StarEdgeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"the model config in {config} is invalid: {exc}") from exc
    load_checkpoint(model, weights)
    model.eval()
    return LanguageModel(model, name=doc.get("name", config.stem), info=doc.get("info", {}))


class LanguageModel:
    """A language model ready to generate: ``lm.stream(prompt, ...)`` / ``lm.generate(prompt, ...)``.

    Wraps any model with the step contract (see the module doc) and the byte tokenizer.
    The model is shared and stateless; each call to :meth:`stream` has its own decode state
    and random generator, so several streams can run interleaved.
    """

    def __init__(self, model: Any, name: str | None = None, info: dict[str, Any] | None = None,
                 tokenizer: ByteTokenizer | None = None) -> None:
        _model_context(model)
        if hasattr(model, "eval"):
            model.eval()
        self.model = model
        self.name = name or type(model).__name__
        self.info = dict(info or {})
        self.tokenizer = tokenizer or getattr(model, "tokenizer", None) or ByteTokenizer()

    @classmethod
    def load(cls, name_or_path: str | os.PathLike | None = None) -> "LanguageModel":
        """Same as :func:`load_lm`."""
        return load_lm(name_or_path)

    @property
    def max_seq_len(self) -> int:
        """The model's context window in tokens (bytes, BOS included)."""
        return _model_context(self.model)

    @property
    def num_parameters(self) -> int:
        """Number of distinct parameters (tied weights counted once)."""
        params = getattr(self.model, "parameters", None)
        return sum(p.numel() for p in params()) if callable(params) else 0

    def stream(self, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
               temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
               repetition_penalty: float = 1.0, seed: int | None = None,
               stop: str | int | Iterable[str | int] | None = None, **kwargs: Any) -> TextStream:
        """Iterator over generated text pieces; see :func:`stream` for every argument."""
        return stream(self.model, prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed,
                      stop, tokenizer=self.tokenizer, **kwargs)

    def generate(self, prompt: str | bytes | Sequence[int] = "", max_new_tokens: int = 128,
                 temperature: float = 0.8, top_k: int | None = None, top_p: float = 0.95,
                 repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: str | int | Iterable[str | int] | None = None, **kwargs: Any) -> str:
        """The generated text as one string; see :func:`stream` for every argument."""
        return self.stream(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                           **kwargs).text()

    def chat(self, messages: Any, max_new_tokens: int = 256, **kwargs: Any) -> TextStream:
        """Stream the assistant's reply to ``messages`` (``[{"role": "user", "content": ...}]``)
        rendered with the model's own chat template; see :func:`staredge.chat.chat_stream`."""
        from staredge.chat import chat_stream

        return chat_stream(self, messages, max_new_tokens, **kwargs)

    def __repr__(self) -> str:
        return f"LanguageModel({self.name!r}, params={self.num_parameters:,}, max_seq_len={self.max_seq_len})"


__all__ = ["DEFAULT_LM_NAME", "LM_FORMAT", "LM_FORMAT_VERSION", "LanguageModel", "load_lm", "save_lm"]
