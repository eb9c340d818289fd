"""Which language model ``export()`` was given: STAR LM names, saved STAR LMs and modules.

:func:`is_lm_source` (does ``staredge export`` treat this as a language model),
:func:`resolve_lm` (the model and its artifact name) and :func:`check_chunk` (the prefill
chunk against the decode graph's context). Used by the one export function
(:mod:`staredge.exporters.api`) and re-exported by :mod:`staredge.exporters.lm_export`; this
module imports neither, so the two do not import each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from staredge.errors import ConfigError
from staredge.exporters.lm_graph import LMDecodeGraph
from staredge.formats import checkpoint_suffixes
from staredge.models.star import STARLanguageModel


def check_chunk(graph: LMDecodeGraph, prefill_chunk: int) -> int:
    """``prefill_chunk`` as an int in 1..max_context, else :class:`ConfigError`."""
    chunk = int(prefill_chunk)
    if chunk < 1 or chunk > graph.max_context:
        raise ConfigError(f"prefill_chunk must be in 1..max_context ({graph.max_context}), got {chunk}")
    return chunk


#: Registry names of language models (besides saved-model paths).
LM_NAMES = ("star_lm_pydoc", "transformer_pp", "striped_mamba")
#: Width and depth of a baseline exported by name when none is given.
BASELINE_DEFAULTS = {"dim": 128, "depth": 10}


def is_lm_source(name_or_path) -> bool:
    """Whether ``staredge export`` should treat this as a language model: a registry LM
    name, a STARLanguageModel, or a saved STAR LM (``.json`` or its ``.safetensors``)."""
    if isinstance(name_or_path, (STARLanguageModel, LMDecodeGraph)):
        return True
    if not isinstance(name_or_path, (str, os.PathLike)):
        return False
    text = str(name_or_path)
    if text.lower() in LM_NAMES:
        return True
    from staredge.models.star.lfm2 import is_hf_folder

    if is_hf_folder(text):  # a Hugging Face folder StarEdge imports (LFM2)
        return True
    p = Path(text)
    stem = p.with_suffix("") if p.suffix == ".json" or p.suffix in checkpoint_suffixes() else p
    cfg = stem.with_suffix(".json")
    if cfg.is_file():
        try:
            import json

            return json.loads(cfg.read_text("utf-8")).get("format") == "staredge-star-lm"
        except (OSError, ValueError, AttributeError):
            return False
    return False


def resolve_lm(name_or_path, dim: int | None = None, depth: int | None = None) -> tuple[STARLanguageModel, str]:
    """(model, name) for a registry LM name, a saved STAR LM path, or a model. ``dim`` and
    ``depth`` build the ``transformer_pp`` / ``striped_mamba`` baselines; for any other model
    they are refused (a ConfigError naming the flag), never ignored."""
    text = getattr(name_or_path, "staredge_name", None) or str(name_or_path)
    key = text.lower() if isinstance(name_or_path, (str, os.PathLike)) else ""
    if key not in ("transformer_pp", "striped_mamba"):
        for flag, value in (("--dim (dim=)", dim), ("--depth (depth=)", depth)):
            if value is not None:
                raise ConfigError(f"{flag} builds the transformer_pp / striped_mamba baselines only; "
                                  f"{text if key else 'this model'} has its own width and depth: drop it")
    if isinstance(name_or_path, STARLanguageModel):
        return name_or_path.eval(), getattr(name_or_path, "staredge_name", "star_lm")
    if key in ("transformer_pp", "striped_mamba"):
        from staredge.models.star import BASELINES

        d = int(dim or BASELINE_DEFAULTS["dim"])
        n = int(depth or BASELINE_DEFAULTS["depth"])
        torch.manual_seed(0)
        model = STARLanguageModel(d, n, BASELINES[key](d, n)).eval()
        return model, f"{key}_d{d}_n{n}"
    from staredge.models.star.lfm2 import from_pretrained, is_hf_folder

    if is_hf_folder(text):  # imported as a STAR genome (tokenizer on model.tokenizer)
        model = from_pretrained(text)
        return model, Path(text).name
    from staredge.models.star.lm import load_lm

    lm = load_lm(text)
    return lm.model.eval(), lm.name


__all__ = ["BASELINE_DEFAULTS", "LM_NAMES", "check_chunk", "is_lm_source", "resolve_lm"]
