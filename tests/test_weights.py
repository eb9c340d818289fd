"""Released weights: download into the user cache from a loopback HTTP server (never the
internet), SHA-256 recorded and checked, atomic downloads, offline mode, strict loading,
seeded random initialisation."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from staredge.cli import main
from staredge.errors import CheckpointError, UnsafeCheckpointError
from staredge.models import create, get_entry
from staredge.models import registry
from staredge.models.hub import WeightsError, WeightsSource, cached_path, recorded_digests
from staredge.paths import cache_dir

MODEL = "starnet_s050"  # the smallest StarNet: a ~2 MB synthetic release file


class Evil:
    """Not on the checkpoint allow-list: a file that pickles it must be refused."""


def _release_bytes(model_name: str = MODEL, scale: float = 0.5, evil: bool = False) -> bytes:
    """A file laid out like the official StarNet release (weights under state_dict, plus args)."""
    model = create(model_name)
    with torch.no_grad():
        sd = {k: (v * scale if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    obj = {"state_dict": sd, "args": argparse.Namespace(model=model_name, epochs=300)}
    if evil:
        obj["extra"] = Evil()
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class _Server:
    """A loopback HTTP server serving fixed files; counts requests, stops by itself after 120 s."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: dict[str, bytes] = {}  # announced length larger than what is sent
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path in server.files:
                    body = server.files[self.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path in server.short:
                    body = server.short[self.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body) * 2))
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                else:
                    self.send_error(404, "not here")

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.timer = threading.Timer(120.0, self.stop)  # bounded: never outlives a stuck test
        self.timer.daemon = True
        self.timer.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    s.files["/release/starnet_s050.pth.tar"] = _release_bytes()
    s.files["/release/wrong_arch.pth.tar"] = _release_bytes("starnet_s100")
    s.files["/release/evil.pth.tar"] = _release_bytes(evil=True)
    s.short["/release/short.pth.tar"] = s.files["/release/starnet_s050.pth.tar"][:100_000]
    yield s
    s.timer.cancel()
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STAREDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STAREDGE_OFFLINE", raising=False)
    return tmp_path / "cache"


def _serve_as(monkeypatch, server, path: str, sha256: str | None = None, filename: str = "s050.pth.tar") -> WeightsSource:
    src = WeightsSource(url=server.url(path), filename=filename, sha256=sha256, source="loopback test server")
    monkeypatch.setitem(registry._REGISTRY, MODEL, dataclasses.replace(get_entry(MODEL), weights=src))
    return src


def _same(a: torch.nn.Module, b: dict) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.items())


def _served_state(server) -> dict:
    obj = torch.load(io.BytesIO(server.files["/release/starnet_s050.pth.tar"]), weights_only=False)
    return obj["state_dict"]


def test_pretrained_downloads_once_records_sha_and_loads_strictly(server, cache, monkeypatch):
    path = "/release/starnet_s050.pth.tar"
    src = _serve_as(monkeypatch, server, path)
    before = server.hits.get(path, 0)
    model = create(MODEL, pretrained=True, progress=False)
    assert model.pretrained is True
    assert _same(model, _served_state(server))
    target = cached_path(MODEL, src)
    assert target == cache / "weights" / MODEL / "s050.pth.tar" and target.is_file()
    digest = hashlib.sha256(server.files[path]).hexdigest()
    assert recorded_digests() == {f"{MODEL}/s050.pth.tar": digest}
    assert model.checkpoint_sha256 == digest
    # no temporary file left beside it
    assert sorted(p.name for p in target.parent.iterdir()) == ["s050.pth.tar"]
    # the second load comes from the cache
    again = create(MODEL, pretrained=True, progress=False)
    assert server.hits[path] == before + 1
    assert _same(again, _served_state(server))


def test_changed_cached_file_is_refused(server, cache, monkeypatch):
    src = _serve_as(monkeypatch, server, "/release/starnet_s050.pth.tar")
    create(MODEL, pretrained=True, progress=False)
    target = cached_path(MODEL, src)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="do not match their SHA-256.*Delete it"):
        create(MODEL, pretrained=True, progress=False)


def test_known_digest_mismatch_keeps_nothing(server, cache, monkeypatch):
    src = _serve_as(monkeypatch, server, "/release/starnet_s050.pth.tar", sha256="0" * 64)
    with pytest.raises(WeightsError, match="expected 0000"):
        create(MODEL, pretrained=True, progress=False)
    folder = cached_path(MODEL, src).parent
    assert not folder.exists() or list(folder.iterdir()) == []


def test_short_download_is_never_used(server, cache, monkeypatch):
    src = _serve_as(monkeypatch, server, "/release/short.pth.tar")
    with pytest.raises(WeightsError, match="could not download|stopped after"):
        create(MODEL, pretrained=True, progress=False)
    folder = cached_path(MODEL, src).parent
    assert not folder.exists() or list(folder.iterdir()) == []
    assert recorded_digests() == {}


def test_missing_file_and_refused_connection_are_clear_errors(server, cache, monkeypatch):
    _serve_as(monkeypatch, server, "/release/nothing-here.pth.tar")
    with pytest.raises(WeightsError, match="HTTP 404.*put it at"):
        create(MODEL, pretrained=True, progress=False)
    # a port nobody listens on (the server's, after binding another socket there is not
    # possible portably: use a fresh server and stop it)
    dead = _Server()
    url = dead.url("/x.pth.tar")
    dead.timer.cancel()
    dead.stop()
    src = WeightsSource(url=url, filename="x.pth.tar")
    monkeypatch.setitem(registry._REGISTRY, MODEL, dataclasses.replace(get_entry(MODEL), weights=src))
    with pytest.raises(WeightsError, match="could not download .*Check the connection"):
        create(MODEL, pretrained=True, progress=False)


def test_offline_mode_uses_the_cache_only(server, cache, monkeypatch):
    path = "/release/starnet_s050.pth.tar"
    src = _serve_as(monkeypatch, server, path)
    monkeypatch.setenv("STAREDGE_OFFLINE", "1")
    before = server.hits.get(path, 0)
    with pytest.raises(WeightsError, match="STAREDGE_OFFLINE") as exc:
        create(MODEL, pretrained=True, progress=False)
    assert str(cached_path(MODEL, src)) in str(exc.value)
    assert server.hits.get(path, 0) == before
    # with the file in the cache, offline works
    monkeypatch.delenv("STAREDGE_OFFLINE")
    create(MODEL, pretrained=True, progress=False)
    monkeypatch.setenv("STAREDGE_OFFLINE", "1")
    assert create(MODEL, pretrained=True, progress=False).pretrained


def test_wrong_architecture_fails_the_strict_key_and_shape_check(server, cache, monkeypatch):
    _serve_as(monkeypatch, server, "/release/wrong_arch.pth.tar")
    with pytest.raises(CheckpointError, match="does not fit starnet_s050"):
        create(MODEL, pretrained=True, progress=False)


def test_release_file_with_other_objects_is_refused(server, cache, monkeypatch):
    _serve_as(monkeypatch, server, "/release/evil.pth.tar")
    with pytest.raises(UnsafeCheckpointError, match="Evil"):
        create(MODEL, pretrained=True, progress=False)


def test_pretrained_needs_a_release():
    from staredge.errors import ConfigError

    with pytest.raises(ConfigError, match="no released weights.*starnet_s1"):
        create("demonet", pretrained=True)
    with pytest.raises(ConfigError, match="not both"):
        create("starnet_s1", pretrained=True, checkpoint="x.pth")


def test_random_init_is_seeded_by_name_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = create(MODEL), create(MODEL)
    assert torch.equal(state, torch.get_rng_state())
    assert _same(a, b.state_dict()) and a.pretrained is False
    c = create("starnet_s100")
    assert a.init_seed != c.init_seed


def test_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    for var in ("STAREDGE_CACHE", "STAREDGE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "staredge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "staredge"
    monkeypatch.setenv("STAREDGE_HOME", str(tmp_path / "se"))
    assert cache_dir() == tmp_path / "se" / "cache"
    monkeypatch.setenv("STAREDGE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_registry_lists_the_official_release_urls():
    for i in (1, 2, 3, 4):
        w = get_entry(f"starnet_s{i}").weights
        assert w.url == ("https://github.com/ma-xu/Rewrite-the-Stars/releases/download/checkpoints_v1/"
                         f"starnet_s{i}.pth.tar")
    assert get_entry("efficientformerv2_s0").weights.url.startswith("https://huggingface.co/timm/efficientformerv2_s0")
    assert get_entry("demonet").weights is None


def test_cli_export_pretrained_and_models_shows_the_cache(server, cache, monkeypatch, tmp_path, capsys):
    from staredge.metadata import read_metadata

    _serve_as(monkeypatch, server, "/release/starnet_s050.pth.tar")
    out = tmp_path / "exports"
    rc = main(["export", MODEL, "--pretrained", "--formats", "onnx", "--out", str(out), "--no-validate",
               "--json", str(tmp_path / "report.json")])
    assert rc == 0
    meta = read_metadata(out / f"{MODEL}.onnx")
    assert meta.extra["pretrained"] is True
    assert meta.checkpoint_sha256 == hashlib.sha256(server.files["/release/starnet_s050.pth.tar"]).hexdigest()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["artifacts"][0]["format"] == "onnx"
    capsys.readouterr()
    assert main(["models", "--family", "starnet", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows[MODEL]["weights"]["cached"] is True
    assert rows[MODEL]["weights"]["path"] == str(cache / "weights" / MODEL / "s050.pth.tar")
    assert rows["starnet_s1"]["weights"]["released"] is True and rows["starnet_s1"]["weights"]["cached"] is False
    assert rows["starnet_s050"]["weights"]["url"].startswith("http://127.0.0.1:")


def test_two_random_exports_are_byte_identical(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STAREDGE_CACHE", str(tmp_path / "cache"))
    for d in ("a", "b"):
        assert main(["export", MODEL, "--formats", "onnx", "--out", str(tmp_path / d), "--no-validate"]) == 0
    err = capsys.readouterr().err
    assert "random weights" in err and "seed" in err
    assert (tmp_path / "a" / f"{MODEL}.onnx").read_bytes() == (tmp_path / "b" / f"{MODEL}.onnx").read_bytes()
    from staredge.metadata import read_metadata

    assert read_metadata(tmp_path / "a" / f"{MODEL}.onnx").extra["pretrained"] is False
    # classify says so in one line
    import numpy as np
    from PIL import Image

    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert main(["classify", str(tmp_path / "a" / f"{MODEL}.onnx"), str(img), "--top-k", "1"]) == 0
    assert "random weights" in capsys.readouterr().err


def test_metadata_says_whether_the_weights_are_still_the_random_init(tmp_path):
    from staredge.metadata import metadata_from_model
    from staredge.models.checkpoint import load_checkpoint, save_safetensors

    model = create(MODEL)
    assert metadata_from_model(model).extra["pretrained"] is False
    trained = create(MODEL)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(0.5)  # as a training step would, in place
    assert metadata_from_model(trained).extra["pretrained"] is True
    path = save_safetensors(trained, tmp_path / "w.safetensors")
    loaded = load_checkpoint(create(MODEL), path)  # loaded outside create()
    assert metadata_from_model(loaded).extra["pretrained"] is True
    assert "pretrained" not in metadata_from_model(torch.nn.Linear(2, 2)).extra
