"""The one copy of the model flags (staredge.commands._args.model_from_args), shared by export
and tune: what issue 22 found (a missing checkpoint read as "model given twice", a shipped
model exported with random weights)."""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("torch")

from staredge.commands import _args  # noqa: E402
from staredge.errors import CheckpointError, ConfigError  # noqa: E402


def _ns(**kw):
    base = dict(model=None, checkpoint=None, model_name=None, num_classes=None, labels=None, pretrained=False)
    return argparse.Namespace(**{**base, **kw})


def test_a_missing_checkpoint_is_named_as_missing(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as err:
        _args.model_from_args(_ns(model=str(tmp_path / "my_ft.safetensors"), model_name="starnet_s2"))
    assert "given twice" not in str(err.value)


def test_the_digits_model_loads_its_shipped_weights():
    model = _args.model_from_args(_ns(model="starnet_digits"))
    assert model.pretrained  # never the seeded random init for a model whose weights ship



def test_one_implementation_turns_a_model_argument_into_a_model(monkeypatch):
    """The CLI's model flags go through exporters.api.resolve_model (export(), tune()): no second copy."""
    import staredge.exporters.api as api

    seen = []
    monkeypatch.setattr(api, "resolve_model", lambda *a, **kw: seen.append((a, kw)) or "model")
    assert _args.model_from_args(_ns(model="starnet_s1", num_classes=3, pretrained=True)) == "model"
    assert seen == [(("starnet_s1", None, None), {"pretrained": True, "num_classes": 3, "labels": None,
                                                  "positional": "MODEL", "img_size": None})]


def test_python_and_cli_read_a_checkpoints_architecture_the_same_way(tmp_path):
    """A checkpoint whose file name says nothing: its StarEdge metadata names the architecture,
    from Python's export()/tune() path as from the CLI (only the CLI could before)."""
    from staredge.exporters.api import resolve_model
    from staredge.models import create, save_safetensors

    path = tmp_path / "finetuned.safetensors"
    save_safetensors(create("starnet_digits", pretrained=True), path,
                     metadata={"staredge": __import__("json").dumps({"model": "starnet_digits"})})
    model = resolve_model(str(path))
    assert model.staredge_name == "starnet_digits"
    with pytest.raises(ConfigError, match="--model NAME"):
        (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
        resolve_model(str(tmp_path / "weights.pt"))
