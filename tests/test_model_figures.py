"""``staredge models`` reads stored params/MACs (staredge/data/model_figures.json): every
entry must equal what the profiler counts now, and every registered model must have one."""

from __future__ import annotations

import pytest

from staredge.commands.models import stored_figures
from staredge.models import list_models
from staredge.profiler import profile


@pytest.mark.slow  # profiles every model (~30 s of CPU)
def test_stored_figures_match_the_profiler_for_every_model():
    stored = stored_figures()
    assert sorted(stored) == sorted(list_models()), "run scripts/model_figures.py after adding a model"
    for name in list_models():
        res = profile(name)
        assert stored[name] == {"params": res.params, "params_no_bn": res.params_no_bn, "macs": res.macs,
                                "input_size": list(res.input_size)}, name


def test_models_command_does_not_profile(monkeypatch, capsys):
    import staredge.profiler

    def refuse(*a, **k):
        raise AssertionError("staredge models profiled a model that has stored figures")

    monkeypatch.setattr(staredge.profiler, "profile", refuse)
    from staredge.cli import main

    assert main(["models", "--json"]) == 0
    assert "starnet_s1" in capsys.readouterr().out


def test_listing_order_does_not_depend_on_import_order():
    """CI once printed the model table with EfficientFormerV2 first because a test had
    imported that family module first: listings follow the registry's family order."""
    import subprocess
    import sys

    code = ("import staredge.models.efficientformer_v2, staredge.models.digits\n"
            "from staredge.models import list_models\nprint(' '.join(list_models()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    from staredge.models import list_models

    assert out == list_models()
    assert out[0] == "starnet_s1" and out[-1] == "starnet_digits"
