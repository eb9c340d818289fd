"""The one copy of the model flags (staredge.commands._args.model_from_args), shared by export
and tune: what issue 22 found (a missing checkpoint read as "model given twice", a shipped
model exported with random weights)."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("torch")

from staredge.commands import _args  # noqa: E402
from staredge.errors import ConfigError  # noqa: E402


def _ns(**kw):
    base = dict(model=None, checkpoint=None, model_name=None, num_classes=None, labels=None, pretrained=False)
    return argparse.Namespace(**{**base, **kw})


def test_a_missing_checkpoint_is_named_as_missing(tmp_path):
    with pytest.raises(ConfigError, match="no such file") as err:
        _args.model_from_args(_ns(model=str(tmp_path / "my_ft.safetensors"), model_name="starnet_s2"))
    assert "given twice" not in str(err.value)


def test_the_digits_model_loads_its_shipped_weights():
    model = _args.model_from_args(_ns(model="starnet_digits"))
    assert model.pretrained  # never the seeded random init for a model whose weights ship

