"""Parity of the STAR LM's step form with its parallel form (the core test of the LM).

For seeded random genomes covering every LIV class 1-17, every feature-group sharing
strategy, featurizer sharing and residual groups (and genomes without any sharing), the
logits from (a) token-by-token decoding and (b) a chunked prefill followed by single-token
steps must equal the parallel forward in fp32 within 1e-4.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from staredge.models.star import LIVConfig, STARLanguageModel, random_genome
from staredge.models.star import choices as C
from staredge.models.star.genome import Genome, Segment

ATOL = 1e-4
SEQ = 20
ATTENTION_CLASSES = (1, 2, 3, 4, 10, 11, 12, 13)
# head_dim 16 at dim 64 gives 4 heads, so SA-3 (repeat 4) and SA-4 (repeat 2) really group K/V.
CONFIGS = {c: LIVConfig(head_dim=16) for c in ATTENTION_CLASSES}


def _scale_up(model: torch.nn.Module, seed: int) -> None:
    """Re-initialise projections at unit scale so every LIV moves the logits visibly
    (the default 0.02 init would make many differences vanish below the tolerance)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "A_log" not in name:
                fan_in = p.shape[1] if "embed" not in name else 4
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def build(genome: Genome, dim: int, seed: int) -> STARLanguageModel:
    torch.manual_seed(seed)
    model = STARLanguageModel(dim, len(genome), genome, max_seq_len=64, configs=CONFIGS).eval()
    _scale_up(model, seed)
    return model


def strategy_genome(cls: int, seed: int) -> Genome:
    """One producer of class ``cls`` and one consumer per sharing strategy (random order of
    strategies, random featurizer sharing), with SwiGLUs in between."""
    rng = random.Random(seed)
    strategies = list(C.valid_feature_strategies(cls)[1:])
    rng.shuffle(strategies)
    segs = [Segment(cls, 1, 1, 1, 1)]
    for k, s in enumerate(strategies):  # group values are numbered per class
        segs.append(Segment(9, k + 1, 1, k + 1, 1))
        segs.append(Segment(cls, 1 if rng.random() < 0.5 else 2 + k, rng.choice((1, 2)), 1, s))
    return Genome(segs).validate()


def mixed_genomes() -> list[tuple[str, Genome]]:
    """Random genomes mixing classes: every class appears twice per genome in some genome,
    once with sharing and residual groups enabled and once with no sharing at all."""
    out = []
    classes = list(range(1, 18))
    random.Random(0).shuffle(classes)
    for k in range(0, 17, 3):
        chunk = classes[k:k + 3]
        seq = chunk + chunk[::-1]
        out.append((f"mixed-share-{k}", random_genome(len(seq), seed=k, classes=seq, share_prob=0.8, residual_prob=0.4)))
        out.append((f"mixed-plain-{k}", random_genome(len(seq), seed=k, classes=seq, share_prob=0.0)))
    return out


CASES = [(f"strategies-class{c}", strategy_genome(c, seed=c)) for c in range(1, 18)] + mixed_genomes()


def test_cases_cover_every_class_and_sharing_kind():
    classes, strategies, featurizer_shared, residual = set(), set(), 0, 0
    for _, g in CASES:
        for i, s in enumerate(g):
            classes.add(s.liv_class)
            if g.feature_producer(i) is not None:
                strategies.add((s.liv_class, s.feature_strategy))
            featurizer_shared += g.featurizer_producer(i) is not None
            residual += g.residual_source(i) is not None
    assert classes == set(range(1, 18))
    every = {(c, s) for c in range(1, 18) for s in C.valid_feature_strategies(c)[1:]}
    assert strategies == every
    assert featurizer_shared >= 10 and residual >= 2
    assert any(all(g.feature_producer(i) is None and g.featurizer_producer(i) is None for i in range(len(g)))
               for _, g in CASES)


@pytest.mark.parametrize("name,genome", CASES, ids=[n for n, _ in CASES])
def test_step_and_chunked_prefill_match_parallel(name, genome):
    seed = sum(map(ord, name))
    dim = 64 if any(C.family(s.liv_class) == "attention" for s in genome) else 32
    model = build(genome, dim, seed)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, C.VOCAB_SIZE, (2, SEQ), generator=gen)
    with torch.no_grad():
        ref = model(ids)
        assert ref.abs().max() > 1.0  # the logits carry signal, the tolerance is meaningful

        state = model.init_state(2)
        steps = []
        for t in range(SEQ):
            logits, state = model.step(ids[:, t:t + 1], state)
            steps.append(logits)
        assert state.pos == SEQ
        torch.testing.assert_close(torch.cat(steps, 1), ref, rtol=0, atol=ATOL)

        # chunked prefill (two chunks of random length), then single tokens
        a = int(torch.randint(1, 8, (1,), generator=gen))
        b = int(torch.randint(1, 8, (1,), generator=gen))
        state = model.init_state(2)
        pieces = []
        for lo, hi in [(0, a), (a, a + b)] + [(t, t + 1) for t in range(a + b, SEQ)]:
            logits, state = model.step(ids[:, lo:hi], state)
            assert logits.shape == (2, hi - lo, C.VOCAB_SIZE)
            pieces.append(logits)
        torch.testing.assert_close(torch.cat(pieces, 1), ref, rtol=0, atol=ATOL)


def test_state_is_a_value_not_mutated_by_step():
    """A kept state can be continued twice with the same result (sessions can fork)."""
    genome = Genome([Segment(1, 1, 1, 1, 1), Segment(5, 1, 1, 1, 1), Segment(8, 1, 1, 1, 1),
                     Segment(2, 1, 1, 1, 1), Segment(1, 1, 2, 1, 4), Segment(8, 1, 2, 1, 3)]).validate()
    model = build(genome, 64, 0)
    ids = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, prefix = model.step(ids[:, :6], model.init_state(1))
        snapshot = {k: v.clone() for c in prefix.caches for k, v in c.items()}
        first, _ = model.step(ids[:, 6:], prefix)
        second, _ = model.step(ids[:, 6:], prefix)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    after = {k: v for c in prefix.caches for k, v in c.items()}
    assert all(torch.equal(after[k], snapshot[k]) for k in snapshot)


def test_consumers_hold_no_cache_for_shared_groups():
    genome = Genome([Segment(1, 1, 1, 1, 1), Segment(1, 2, 1, 1, 2), Segment(1, 3, 1, 1, 4),
                     Segment(7, 1, 1, 1, 1), Segment(7, 2, 1, 1, 3), Segment(5, 1, 1, 1, 1),
                     Segment(5, 2, 1, 1, 4)]).validate()
    model = build(genome, 64, 1)
    caches = model.init_state(1).caches
    assert set(caches[0]) == {"key", "value"}
    assert set(caches[1]) == {"value"}  # shares K
    assert caches[2] == {}  # shares K and V
    assert set(caches[3]) == {"conv"} and caches[4] == {}  # shares u = B*x: no conv ring
    assert set(caches[5]) == {"ssm", "conv"} and set(caches[6]) == {"ssm"}  # shares x


def test_fast_paths_equal_their_references_with_gradients():
    """The parallel forms use fused attention and a restructured scan; both equal the
    plain references (values and gradients)."""
    from staredge.models.star.liv import attend, attend_causal_sdpa, selective_scan, selective_scan_fast

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=g, requires_grad=True) for _ in range(3))
    k2, v2 = k[:, :2].detach().requires_grad_(), v[:, :2].detach().requires_grad_()  # grouped K/V
    lam = torch.tensor(0.3)
    for kk, vv, lm in [(k, v, None), (k2, v2, None), (k, v, lam), (k2, v2, lam)]:
        ref = attend(q, kk, vv, 0, lm)
        fast = attend_causal_sdpa(q, kk, vv, lm)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-5)
        gr = torch.autograd.grad(ref.square().sum(), (q, kk))
        gf = torch.autograd.grad(fast.square().sum(), (q, kk))
        for a, b in zip(gf, gr):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)

    x = torch.randn(2, 13, 8, generator=g, requires_grad=True)
    dt = torch.nn.functional.softplus(torch.randn(2, 13, 8, generator=g)).requires_grad_()
    a = -torch.arange(1, 5, dtype=torch.float32).repeat(8, 1)
    bm, cm = (torch.randn(2, 13, 4, generator=g, requires_grad=True) for _ in range(2))
    h0 = torch.randn(2, 8, 4, generator=g)
    (yr, hr), (yf, hf) = selective_scan(x, dt, a, bm, cm, h0), selective_scan_fast(x, dt, a, bm, cm, h0)
    torch.testing.assert_close(yf, yr, rtol=0, atol=1e-5)
    torch.testing.assert_close(hf, hr, rtol=0, atol=1e-5)
    gr = torch.autograd.grad(yr.square().sum(), (x, dt, bm, cm))
    gf = torch.autograd.grad(yf.square().sum(), (x, dt, bm, cm))
    for a_, b_ in zip(gf, gr):
        torch.testing.assert_close(a_, b_, rtol=1e-5, atol=1e-4)


def test_long_prefill_chunks_use_the_fft_step_path_and_still_match():
    """Chunks longer than LONGCONV_DIRECT_MAX_NEW switch GConv-2's step form to FFT over the
    history; the logits must not change."""
    genome = Genome([Segment(8, 1, 1, 1, 1), Segment(9, 1, 1, 1, 1), Segment(17, 1, 1, 1, 1),
                     Segment(8, 1, 2, 1, 4), Segment(1, 1, 1, 1, 1)]).validate()
    model = build(genome, 64, 7)
    n = C.LONGCONV_DIRECT_MAX_NEW
    ids = torch.randint(0, 256, (1, 2 * n + 6), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(ids)
        state = model.init_state(1)
        first, state = model.step(ids[:, :n + 2], state)  # FFT from an empty history
        second, state = model.step(ids[:, n + 2:2 * n + 5], state)  # FFT with a history
        last, state = model.step(ids[:, 2 * n + 5:], state)  # direct sum
    torch.testing.assert_close(torch.cat([first, second, last], 1), ref, rtol=0, atol=ATOL)


@pytest.mark.parametrize("cls", range(1, 18))
def test_every_class_trains_and_every_parameter_gets_a_gradient(cls):
    """Backward works through the parallel form of every class, with every sharing
    strategy, and no parameter is dead (featurizers hold only the groups their users compute)."""
    torch.manual_seed(cls)
    genome = strategy_genome(cls, seed=cls)
    model = STARLanguageModel(32 if C.family(cls) != "attention" else 64, len(genome), genome,
                              max_seq_len=32, configs=CONFIGS)
    text = torch.tensor(list(b"the quick brown fox jumps over the lazy dog. " * 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        starts = torch.randint(0, len(text) - 17, (4,))
        w = torch.stack([text[s:s + 17] for s in starts.tolist()])
        loss = torch.nn.functional.cross_entropy(model(w[:, :-1]).reshape(-1, C.VOCAB_SIZE), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if step == 0:
            dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert dead == []
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_rotary_positions_beyond_the_precomputed_table(monkeypatch):
    """Attention LIVs precompute rotary angles for ROPE_TABLE_MAX positions; later positions
    are computed per call and must give the same logits."""
    monkeypatch.setattr(C, "ROPE_TABLE_MAX", 8)
    genome = Genome([Segment(1, 1, 1, 1, 1), Segment(10, 1, 1, 1, 1), Segment(9, 1, 1, 1, 1)]).validate()
    model = build(genome, 64, 3)
    assert model.backbone.livs[0].rope_cos.shape[0] == 8
    ids = torch.randint(0, 256, (1, 14), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(ids)
        state = model.init_state(1)
        a, state = model.step(ids[:, :6], state)
        b, state = model.step(ids[:, 6:11], state)  # straddles the table's end
        c, state = model.step(ids[:, 11:], state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), ref, rtol=0, atol=ATOL)
