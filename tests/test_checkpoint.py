"""Safe checkpoint loading: formats, prefixes, heads, errors, and refusal of pickled code."""

from __future__ import annotations

import pickle

import pytest
import torch

from staredge.errors import CheckpointError, StarEdgeError, UnsafeCheckpointError
from staredge.models import create, load_checkpoint, read_state_dict, save_safetensors


class _Payload:
    """Unpickling this object would write a marker file (stands in for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _sd(name="starnet_s050"):
    return create(name).state_dict()


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickled_code_is_refused_and_not_run(tmp_path, zipfile):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": _sd(), "args": _Payload(str(marker))}, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError, match="allow-list") as err:
        load_checkpoint(create("starnet_s050"), path)
    assert "Nothing from it was executed" in str(err.value)
    assert not marker.exists()


def test_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"state_dict": _Payload(str(marker))}))
    with pytest.raises(StarEdgeError):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_state_dict_and_module_prefix(tmp_path):
    src = create("starnet_s050")
    path = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    sd = read_state_dict(path)
    assert set(sd) == set(src.state_dict())


def test_model_key_nesting(tmp_path):
    path = tmp_path / "nested.pth"
    torch.save({"model": _sd(), "epoch": 3}, path)
    assert set(read_state_dict(path)) == set(_sd())


def test_safetensors_round_trip(tmp_path):
    src = create("starnet_s050")
    with torch.no_grad():
        src.head.bias.fill_(0.25)
    path = save_safetensors(src, tmp_path / "w.safetensors")
    dst = create("starnet_s050", checkpoint=str(path))
    assert torch.equal(dst.head.bias, src.head.bias)
    # detected by content too, whatever the suffix
    other = tmp_path / "w.bin"
    other.write_bytes(path.read_bytes())
    assert torch.equal(read_state_dict(other)["head.bias"], src.head.bias)


def test_num_classes_drops_head(tmp_path):
    src = create("starnet_s050")
    path = tmp_path / "imagenet.pth"
    torch.save(src.state_dict(), path)
    m = create("starnet_s050", checkpoint=str(path), num_classes=10)
    assert m.head.out_features == 10
    assert torch.equal(m.stem[0].conv.weight, src.stem[0].conv.weight)
    assert m.pretrained_cfg.num_classes == 10


def test_head_mismatch_hint(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(create("starnet_s050", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match="num_classes"):
        create("starnet_s050", checkpoint=str(path))


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = _sd()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        create("starnet_s050", checkpoint=str(path))
    assert "missing keys (1): head.bias" in str(err.value)
    assert "unexpected keys (1): extra.weight" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"\x80\x02garbage"])
def test_corrupt_files(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "t.pth"
    torch.save(_sd(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        read_state_dict(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict("/nonexistent/ckpt.pth")


def test_unknown_model_suggests():
    from staredge.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match="starnet_s1"):
        create("starnet-s1x")
