"""Models shared by the LM artifact tests (tests/test_lm_*.py).

The random genomes are the parity suite's (tests/test_star_parity.py): one genome per class
with every feature-group strategy, and mixed genomes with featurizer/feature-group sharing
and residual groups. ``MIXED`` (the six ``mixed-share`` genomes) together hold all 17 LIV
classes, with sharing and residual groups: those are exported to every format.
"""

from __future__ import annotations

import random

import torch

from staredge.models.star import STARLanguageModel, random_genome, striped_mamba, transformer_pp
from staredge.models.star import choices as C
from staredge.exporters.lm_validate import prompt_ids
from test_star_parity import CASES, CONFIGS, _scale_up

#: Context of the small test models: a 97-token prompt plus 128 greedy tokens fits.
CONTEXT = 232
#: Max |logit| of the test models on the validation prompt (the shipped model: 13.5).
LOGIT_SCALE = 12.0
MIXED = [(n, g) for n, g in CASES if n.startswith("mixed-share")]


def all_classes_genome(seed: int = 11):
    """One genome holding every LIV class twice (34 LIVs, shuffled), with featurizer and
    feature-group sharing and residual groups: one conversion covers all 17 classes."""
    classes = [c for c in range(1, 18) for _ in range(2)]
    random.Random(seed).shuffle(classes)
    return random_genome(len(classes), seed=seed, classes=classes, share_prob=0.8, residual_prob=0.3)


def small_model(genome, seed: int, dim: int | None = None, max_seq_len: int = CONTEXT) -> STARLanguageModel:
    """A seeded model of ``genome`` at small width with unit-scale weights (logits far from ties)."""
    if dim is None:
        dim = 64 if any(C.family(s.liv_class) == "attention" for s in genome) else 32
    torch.manual_seed(seed)
    model = STARLanguageModel(dim, len(genome), genome, max_seq_len=max_seq_len, configs=CONFIGS).eval()
    _scale_up(model, seed)
    # Calibrate the logit range to the shipped model's (max |logit| ~13.5 on the validation
    # prompt): the absolute 1e-4 tolerance then means what it means for a trained model.
    with torch.no_grad():
        ids = torch.tensor([prompt_ids()[:max_seq_len]])
        model.norm.weight.mul_(LOGIT_SCALE / model(ids).abs().max())
    return model


def baseline(name: str, seed: int = 0) -> STARLanguageModel:
    """transformer_pp / striped_mamba at dim 64 with 8 LIVs (StripedMamba: SA-1 at 2 and 6,
    Rec-1 at 0 and 4, SwiGLU between)."""
    genome = {"transformer_pp": transformer_pp, "striped_mamba": striped_mamba}[name](64, 8)
    return small_model(genome, seed, dim=64)


__all__ = ["all_classes_genome", "CASES", "MIXED", "CONTEXT", "small_model", "baseline"]
