"""The usage example of the ``star-backbone`` package README runs as written.

The snippet below is copied verbatim from the README. It imports from ``star`` (the
third-party package name); our implementation lives in ``staredge.models.star``, so the test
maps the name ``star`` to it for the duration of the test.
"""

from __future__ import annotations

import sys

import torch

import staredge.models.star as star_pkg

README_EXAMPLE = '''
from star import STARBackbone, LIVConfig, TokenMixingStructure, ChannelMixingStructure
# Configure model
dim = 512
depth = 24
# Define genome
genome = [
[1, 1, 1, 1, 1], # SA-1
[9, 1, 1, 1, 1], # GMemless
[1, 2, 1, 2, 1], # SA-1 with sharing
]
# Configure operators
configs = {
1: LIVConfig(
featurizer_class=1,
token_mixing=TokenMixingStructure.LOW_RANK,
sparsity_mask=False,
nonlinearity="softmax",
channel_mixing=ChannelMixingStructure.GROUPED
),
9: LIVConfig(
featurizer_class=9,
token_mixing=TokenMixingStructure.DIAGONAL,
sparsity_mask=False,
nonlinearity="silu",
channel_mixing=ChannelMixingStructure.DENSE
)
}
# Create model
model = STARBackbone(dim, depth, genome, configs)
'''


def test_readme_example_runs_verbatim(monkeypatch):
    monkeypatch.setitem(sys.modules, "star", star_pkg)
    scope: dict = {}
    exec(compile(README_EXAMPLE, "star-backbone-README", "exec"), scope)
    model = scope["model"]
    assert isinstance(model, star_pkg.STARBackbone)
    # The 3-segment motif is tiled to depth 24: SA-1, GMemless, SA-1 repeated 8 times.
    assert len(model.livs) == 24
    assert [s.liv_class for s in model.genome][:6] == [1, 9, 1, 1, 9, 1]
    assert str(model.genome).startswith("11111-91111-12121-11111")
    x = torch.randn(1, 5, 512)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 5, 512) and torch.isfinite(y).all()
    # Causality: changing the last token leaves earlier outputs unchanged.
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        y2 = model(x2)
    torch.testing.assert_close(y2[:, :-1], y[:, :-1], rtol=0, atol=1e-5)
    assert not torch.allclose(y2[:, -1], y[:, -1])
