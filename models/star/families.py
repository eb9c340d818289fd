"""Language-model families StarEdge can build or import, with their sizes: the data behind
``staredge models`` (its LM table).

Each row says what a family is (genome, width, LIVs, vocabulary), its parameters (without
and with the embedding) and the decode state of batch 1 after ``seq_len`` tokens, computed
analytically (:func:`staredge.models.star.analysis.analyze_genome`, no weights allocated).
Families: the shipped STAR genome (``star_lm_pydoc``), the paper's baselines
(Transformer++, StripedMamba) and the LFM2 sizes as STAR genomes (shapes of Liquid AI's
released configs; import real weights with :func:`staredge.models.star.from_pretrained`).
A local Hugging Face folder or a built model gives a row too (:func:`lm_family_row`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from staredge.models.star import choices as C

#: Context at which ``staredge models`` reports decode state (tokens).
DEFAULT_STATE_CONTEXT = 4096

#: LFM2 sizes as config.json fragments (public shapes of the released checkpoints: 16 layers,
#: 10 short-conv + 6 GQA blocks at layers 2, 5, 8, 10, 12, 14, 65,536 tokens).
LFM2_SHAPES: dict[str, dict[str, Any]] = {
    name: {"model_type": "lfm2", "vocab_size": 65536, "hidden_size": hidden, "intermediate_size": inter,
           "num_hidden_layers": 16, "num_attention_heads": heads, "num_key_value_heads": 8,
           "full_attn_idxs": [2, 5, 8, 10, 12, 14], "conv_L_cache": 3, "block_multiple_of": 256,
           "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": True, "norm_eps": 1e-5,
           "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "max_position_embeddings": 128000,
           "tie_word_embeddings": True}
    for name, hidden, inter, heads in (("lfm2-350m", 1024, 6656, 16), ("lfm2-700m", 1536, 10240, 24),
                                       ("lfm2-1.2b", 2048, 12288, 32))
}


@dataclass
class LMFamilyRow:
    """One language model family at one size (see the module doc for the conventions)."""

    name: str
    family: str
    genome: str
    dim: int
    livs: int
    vocab_size: int
    params: int
    params_with_embeddings: int
    state_bytes: int
    seq_len: int
    bytes_per_element: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def _row(name: str, family: str, genome, dim: int, vocab: int, tied: bool, configs, seq_len: int,
         bytes_per_element: int) -> LMFamilyRow:
    from staredge.models.star.analysis import analyze_genome

    a = analyze_genome(genome, dim, seq_len, bytes_per_element, configs=configs)
    embed = vocab * dim * (1 if tied else 2)
    return LMFamilyRow(name, family, _short_genome(a.genome), dim, len(a.rows), vocab, a.total_params,
                       a.total_params + embed, a.total_cache_bytes, seq_len, bytes_per_element)


def _short_genome(genome: str) -> str:
    """Class ids only (``7-9-7-9-4-9...``), which is what a table can show."""
    parts = genome.replace("_", "-").split("-")
    return "-".join(p.split(".")[0] if "." in p else p[0] for p in parts)


def lfm2_row(name: str, config: dict[str, Any], seq_len: int = DEFAULT_STATE_CONTEXT,
             bytes_per_element: int = 2) -> LMFamilyRow:
    """The row of an LFM2 ``config.json`` dict as a STAR genome."""
    from staredge.models.star.lfm2 import lfm2_configs, lfm2_genome, parse_lfm2_config

    spec = parse_lfm2_config(config)
    return _row(name, "LFM2 (STAR genome)", lfm2_genome(spec), spec.hidden_size, spec.vocab_size,
                spec.tie_embeddings, lfm2_configs(spec), seq_len, bytes_per_element)


def lm_family_row(model_or_folder: Any, seq_len: int = DEFAULT_STATE_CONTEXT, bytes_per_element: int = 2,
                  name: str | None = None) -> LMFamilyRow:
    """The row of a built STAR LM or of a Hugging Face folder (its config.json; no weights read)."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        from staredge.models.star.lfm2 import _read_config

        folder = Path(model_or_folder)
        return lfm2_row(name or folder.name, _read_config(folder), seq_len, bytes_per_element)
    m = model_or_folder
    return _row(name or getattr(m, "staredge_name", "star_lm"), "STAR genome", m.genome, m.dim, m.vocab_size,
                m.tie_embeddings, m.backbone.configs, seq_len, bytes_per_element)


def lm_families(seq_len: int = DEFAULT_STATE_CONTEXT, bytes_per_element: int = 2) -> list[LMFamilyRow]:
    """Every LM family StarEdge knows, with parameters and decode state at ``seq_len`` tokens:
    the shipped STAR genome, Transformer++ and StripedMamba (24 LIVs, width 768, as in the
    paper's analysis) and the three LFM2 sizes."""
    from staredge.models.star.genome import striped_mamba, transformer_pp

    rows = []
    try:
        from importlib import resources

        shipped = Path(str(resources.files("staredge").joinpath("data", "star_lm_pydoc.json")))
        doc = json.loads(shipped.read_text(encoding="utf-8"))
        cfg = doc["model"] if isinstance(doc["model"], dict) else json.loads(doc["model"])
        rows.append(_row("star_lm_pydoc", "STAR genome (shipped)", cfg["genome"], cfg["dim"],
                         cfg.get("vocab_size", C.VOCAB_SIZE), cfg.get("tie_embeddings", True), cfg.get("configs"),
                         seq_len, bytes_per_element))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a source tree without the shipped model still lists the others
    for name, family, build in (("transformer_pp", "Transformer++", transformer_pp),
                                ("striped_mamba", "StripedMamba", striped_mamba)):
        rows.append(_row(name, family, build(768, 24), 768, C.VOCAB_SIZE, True, None, seq_len, bytes_per_element))
    for name, config in LFM2_SHAPES.items():
        rows.append(lfm2_row(name, config, seq_len, bytes_per_element))
    return rows


__all__ = ["lm_families", "lm_family_row", "lfm2_row", "LMFamilyRow", "LFM2_SHAPES", "DEFAULT_STATE_CONTEXT"]
