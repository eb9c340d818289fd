"""Issue 22: a checkpoint of another architecture names the model it looks like, in a few
hundred characters, instead of listing every key."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from staredge.errors import CheckpointError  # noqa: E402
from staredge.models import create  # noqa: E402


def test_wrong_variant_names_the_model_it_looks_like(tmp_path):
    path = tmp_path / "s2.pth"
    torch.save(create("starnet_s2").state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        create("starnet_s1", checkpoint=str(path))
    msg = str(err.value)
    assert "looks like a checkpoint of starnet_s2" in msg and "--model starnet_s2" in msg
    assert len(msg) < 600


def test_cli_says_it_under_the_command(tmp_path, capsys):
    from staredge.cli import main

    path = tmp_path / "weights.pth"
    torch.save(create("starnet_s050").state_dict(), path)
    assert main(["tune", str(path), "--model", "starnet_s1", "--formats", "onnx", "--precision", "fp32",
                 "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("staredge tune: error:") and "starnet_s050" in err and len(err) < 800
