"""Downloads of released weights under hostile servers (issue 23), against a loopback HTTP
server on 127.0.0.1 only. Every server behaviour is bounded (loops stop by themselves) and
every limit is made small through ``STAREDGE_DOWNLOAD_TIMEOUT`` or ``max_bytes``.

- an endless slow body ends (minimum speed after the timeout), a silent server ends (stall
  timeout), also with ``STAREDGE_DOWNLOAD_TIMEOUT=3``;
- a size cap from ``Content-Length`` (before the body) and from the release table (``max_bytes``);
- a ``Content-Length`` shorter or longer than the body never leaves a file or a recorded digest
  in the cache (no poisoned cache);
- a folder where the file should be, and a cache folder that cannot be written, are typed errors
  naming the path.
"""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from staredge.errors import ConfigError, StarEdgeError
from staredge.models import hub
from staredge.models.hub import WeightsError, WeightsSource, cached_path, fetch_weights, recorded_digests


def _zip_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(50_000, dtype=torch.float32)}, buf)
    return buf.getvalue()


def _safetensors_file() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.arange(50_000, dtype=torch.float32)})


class _Hostile:
    """A loopback server whose paths misbehave on purpose; stops by itself after 60 s."""

    def __init__(self) -> None:
        self.body = _zip_checkpoint()
        self.safetensors = _safetensors_file()
        self.stop_event = threading.Event()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                try:
                    getattr(srv, "_" + path.strip("/").replace("-", "_"))(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.timer = threading.Timer(60.0, self.stop)
        self.timer.daemon = True
        self.timer.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- behaviours (bounded: at most ~30 s each, and they end when the client leaves)

    def _ok(self, h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.body)))
        h.end_headers()
        h.wfile.write(self.body)

    def _trickle(self, h):  # an endless slow body: one byte every 20 ms, no Content-Length
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(1500):
            if self.stop_event.is_set():
                return
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.02)

    def _slow_headers(self, h):  # a header line that never ends, one byte every 50 ms
        h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(600):
            if self.stop_event.is_set():
                return
            h.wfile.write(b"a")
            h.wfile.flush()
            time.sleep(0.05)

    def _huge_chunk(self, h):  # a chunk size of 2**64-1 (found by scripts/fuzz.py's download target)
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"ffffffffffffffff\r\nabc")

    def _silent(self, h):  # headers, then nothing
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.flush()
        self.stop_event.wait(30)

    def _huge_length(self, h):
        h.send_response(200)
        h.send_header("Content-Length", str(10**15))
        h.end_headers()
        h.wfile.write(self.body[:1000])

    def _bad_length(self, h):
        h.send_response(200)
        h.send_header("Content-Length", "12abc")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(self.body)

    def _no_length(self, h):  # the whole file, no Content-Length, ends with the connection
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(self.body)

    def _short_length(self, h):  # announces half the body, sends all of it
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.body) // 2))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(self.body)

    def _short_length_safetensors(self, h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.safetensors) - 1000))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(self.safetensors)

    def _long_length(self, h):  # announces twice the body, sends it and hangs up
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.body) * 2))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(self.body)
        h.close_connection = True


@pytest.fixture(scope="module")
def server():
    s = _Hostile()
    yield s
    s.timer.cancel()
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STAREDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STAREDGE_OFFLINE", raising=False)
    monkeypatch.delenv("STAREDGE_DOWNLOAD_TIMEOUT", raising=False)
    return tmp_path / "cache"


def _src(server, path: str, filename: str = "w.pth", **kw) -> WeightsSource:
    return WeightsSource(url=server.url(path), filename=filename, source="hostile loopback server", **kw)


def _nothing_kept(src: WeightsSource) -> None:
    folder = cached_path("m", src).parent
    assert not folder.exists() or list(folder.iterdir()) == []
    assert recorded_digests() == {}


def test_a_good_download_still_works_without_content_length(server, cache):
    path = fetch_weights("m", _src(server, "no-length"), progress=False)
    assert path.read_bytes() == server.body
    assert recorded_digests() == {"m/w.pth": hub.sha256_of(path)}


@pytest.mark.parametrize("timeout", ["1", "3"])
def test_an_endless_slow_body_ends(server, cache, monkeypatch, timeout):
    monkeypatch.setenv("STAREDGE_DOWNLOAD_TIMEOUT", timeout)
    src = _src(server, "trickle")
    with pytest.raises(WeightsError, match="too slow.*MIN_BYTES_PER_S.*STAREDGE_DOWNLOAD_TIMEOUT"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)


def test_endless_slow_headers_end(server, cache, monkeypatch):
    monkeypatch.setenv("STAREDGE_DOWNLOAD_TIMEOUT", "1")
    src = _src(server, "slow-headers")
    with pytest.raises(WeightsError, match="headers did not arrive within 2 s"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)


def test_a_silent_server_hits_the_stall_timeout(server, cache, monkeypatch):
    monkeypatch.setenv("STAREDGE_DOWNLOAD_TIMEOUT", "1")
    src = _src(server, "silent")
    with pytest.raises(WeightsError, match="no bytes for 1 s"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "1e99"])
def test_a_bad_timeout_setting_is_a_config_error(cache, monkeypatch, value):
    monkeypatch.setenv("STAREDGE_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ConfigError, match="STAREDGE_DOWNLOAD_TIMEOUT"):
        hub.download_timeout()


def test_the_size_cap_applies_to_content_length_and_to_the_body(server, cache, monkeypatch):
    src = _src(server, "huge-length")
    with pytest.raises(WeightsError, match="announces 1,000,000,000,000,000 bytes, over the limit"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)
    # the release table's max_bytes, and a body without Content-Length going past it
    src = _src(server, "no-length", max_bytes=10_000)
    with pytest.raises(WeightsError, match="passed the limit of 10,000 bytes"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)
    monkeypatch.setattr(hub, "MAX_DOWNLOAD_BYTES", 20_000)
    src = _src(server, "ok")
    with pytest.raises(WeightsError, match="over the limit of 20,000"):
        fetch_weights("m", src, progress=False)


@pytest.mark.parametrize("path", ["bad-length", "huge-chunk"])
def test_an_invalid_length_is_refused(server, cache, path):
    src = _src(server, path)
    with pytest.raises(WeightsError, match="could not download|invalid Content-Length|stopped after 3 bytes"):
        fetch_weights("m", src, progress=False)
    _nothing_kept(src)


@pytest.mark.parametrize("path, filename", [("short-length", "w.pth"), ("short-length-safetensors", "w.safetensors"),
                                            ("long-length", "w.pth")])
def test_a_wrong_content_length_never_poisons_the_cache(server, cache, path, filename):
    src = _src(server, path, filename=filename)
    with pytest.raises(WeightsError, match="cut short|stopped after") as info:
        fetch_weights("m", src, progress=False)
    assert "nothing was kept" in str(info.value)
    _nothing_kept(src)
    # a later call asks the server again instead of failing on a cached short file
    with pytest.raises(WeightsError, match="cut short|stopped after"):
        fetch_weights("m", src, progress=False)


def test_a_folder_in_place_of_the_file_names_the_path(server, cache):
    src = _src(server, "ok")
    target = cached_path("m", src)
    target.mkdir(parents=True)
    with pytest.raises(WeightsError, match="is a folder") as info:
        fetch_weights("m", src, progress=False)
    assert str(target) in str(info.value)
    assert not isinstance(info.value, IsADirectoryError)


@pytest.mark.parametrize("where", ["file-in-the-way", "proc"])
def test_an_unwritable_cache_names_the_path(server, tmp_path, monkeypatch, where):
    if where == "proc":
        cache = Path("/proc/staredge-cache")
    else:
        (tmp_path / "afile").write_text("x")
        cache = tmp_path / "afile" / "cache"
    monkeypatch.setenv("STAREDGE_CACHE", str(cache))
    monkeypatch.delenv("STAREDGE_OFFLINE", raising=False)
    with pytest.raises(WeightsError, match="cannot write the weights cache") as info:
        fetch_weights("m", _src(server, "ok"), progress=False)
    assert str(cache) in str(info.value) and "STAREDGE_CACHE" in str(info.value)
    assert isinstance(info.value, StarEdgeError)
