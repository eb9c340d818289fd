"""STAR language models: genomes, LIV operators, backbone and LM (see docs/star-lm.md).

Public names: :class:`STARBackbone`, :class:`STARLanguageModel` (with ``forward``,
``init_state``, ``step``), :class:`LIVConfig`, :class:`TokenMixingStructure`,
:class:`ChannelMixingStructure` (as in the ``star-backbone`` README), genome helpers
(:func:`parse_genome`, :class:`Genome`, :func:`random_genome`) and the baselines
:func:`transformer_pp` / :func:`striped_mamba`. Our concrete operator choices live in
:mod:`staredge.models.star.choices`; the operator table is in :mod:`staredge.models.star.liv`.
Hugging Face LFM2 folders import as STAR genomes with :func:`from_pretrained` and are written
back with :func:`save_pretrained` (:mod:`staredge.models.star.lfm2`).
"""

from staredge.models.star.choices import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE
from staredge.models.star.config import ChannelMixingStructure, LIVConfig, TokenMixingStructure
from staredge.models.star.genome import (
    BASELINES,
    Genome,
    GenomeError,
    GenomeIssue,
    Segment,
    parse_genome,
    random_genome,
    striped_mamba,
    transformer_pp,
)

#: Names whose modules need torch, imported on first use (PEP 562): genomes are parsed, checked
#: and printed without torch (``staredge genome``).
_LAZY = {"STARBackbone": "backbone", "STARLanguageModel": "backbone", "STARState": "backbone",
         "from_pretrained": "lfm2", "is_hf_folder": "lfm2", "save_pretrained": "lfm2"}


def __getattr__(name: str):
    """The torch-backed names (backbone, LFM2 import), imported when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'staredge.models.star' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"staredge.models.star.{module}"), name)
    globals()[name] = value
    return value

__all__ = [
    "STARBackbone", "STARLanguageModel", "STARState", "LIVConfig", "TokenMixingStructure",
    "ChannelMixingStructure", "Genome", "GenomeError", "GenomeIssue", "Segment", "parse_genome",
    "random_genome", "transformer_pp", "striped_mamba", "BASELINES", "VOCAB_SIZE", "BOS_ID",
    "EOS_ID", "PAD_ID", "from_pretrained", "save_pretrained", "is_hf_folder",
]
