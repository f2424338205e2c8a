"""Model zoo download / cache / verification, all against a loopback HTTP server.

The server plays both sources: GitHub release files at ``/releases/<file>`` and a minimal
Hugging Face Hub at ``/<repo>/resolve/<revision>/<file>`` (HEAD + GET with ``X-Repo-Commit`` and
an LFS-style ``ETag`` = sha256 of the content), so ``hf_hub_download`` runs unmodified.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from conftest import tiny_zoo
from sinsr_cli import fetch, hub
from sinsr_cli import zoo as zoo_module
from sinsr_cli.config import PRESETS, VQ_PRESETS, tiny_unet, tiny_vq
from sinsr_cli.hub import (
    WeightsMissing,
    WeightsUnavailable,
    cached_status,
    download,
    resolve_weights,
    verify_cache,
    zoo_entry,
)
from sinsr_cli.mirror import export_mirror
from sinsr_cli.models.swin_unet import SwinUNet
from sinsr_cli.models.vq_f4 import VQModel

REPO = "test/weights"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- a loopback server ----------------------------------------------------------------------


@dataclass
class Route:
    body: bytes
    mode: str = "ok"  # ok | short (fewer bytes than Content-Length) | nolength (cut, no length) | 404
    headers: dict[str, str] = field(default_factory=dict)


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                with server._lock:
                    server.log.append((self.command, self.path))
                route = server.routes.get(self.path)
                if route is None or route.mode == "404":
                    self.send_response(404)
                    if "/resolve/" in self.path:  # what the Hub says for a missing file
                        self.send_header("X-Error-Code", "EntryNotFound")
                        self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if route.mode != "nolength":
                    self.send_header("Content-Length", str(len(route.body)))
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if not body:
                    return
                if route.mode == "ok":
                    self.wfile.write(route.body)
                else:  # the connection drops half-way through the body
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def release(self, filename: str, body: bytes, mode: str = "ok") -> None:
        self.routes[f"/releases/{filename}"] = Route(body, mode)

    def hub_file(self, filename: str, body: bytes, revision: str = "main", repo: str = REPO) -> None:
        sha = hashlib.sha256(body).hexdigest()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{sha}"'}
        self.routes[f"/{repo}/resolve/{revision}/{filename}"] = Route(body, "ok", headers)

    def count(self, needle: str = "", method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p in self.log if needle in p and (method is None or m == method))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def vq_pth() -> bytes:
    torch.manual_seed(0)
    sd = {f"module.{k}": v for k, v in VQModel(tiny_vq()).state_dict().items()}  # DDP-style keys
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def unet_pth() -> bytes:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(SwinUNet(tiny_unet()).state_dict(), buf)
    return buf.getvalue()


@pytest.fixture
def env(server, tmp_path, monkeypatch):
    """Point the zoo at the loopback server, the cache at tmp_path, and clear offline flags."""
    server.routes.clear()
    server.log.clear()
    for var in ("SINSR_OFFLINE", "HF_HUB_OFFLINE", "HF_TOKEN", "SINSR_HUB_REVISION", "SINSR_HTTP_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("SINSR_HUB_REPO", REPO)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setattr(fetch, "HTTP_TIMEOUT", 5.0)
    tiny_zoo(monkeypatch, tuple(dataclasses.replace(e, url=f"{server.base}/releases/{e.filename}") for e in hub.ZOO))
    return tmp_path / "cache"


def sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def corrupt(path: Path, offset: int) -> None:
    """Flip one byte in place. Like any later write it moves the mtime: made explicit here, since
    a write in the same clock tick as the download could leave it unchanged."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once, like a network that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cache_files(root: Path) -> list[str]:
    """Every file under the cache outside huggingface_hub's own folder, lock files aside."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "hub" not in p.relative_to(root).parts and p.suffix != ".lock"
    )


# -- the table ------------------------------------------------------------------------------


def test_zoo_table_is_complete_and_consistent():
    assert [e.name for e in hub.ZOO] == ["sinsr-v1", "sinsr-v2", "resshift-v1", "resshift-v2", "resshift-v3", "vq-f4"]
    for e in hub.ZOO:
        assert e.kind in ("unet", "vq")
        assert e.preset in (PRESETS if e.kind == "unet" else VQ_PRESETS)
        assert e.url.startswith("https://github.com/") and e.url.endswith(".pth")
        assert e.hub_filename.endswith(".safetensors") and e.revision == "main" and e.sha256 is None
        assert e.repo_id == ""  # no public Hub mirror exists: the zoo names none (SINSR_HUB_REPO sets one)
        assert e.licence == ("CC BY-NC-SA 4.0" if e.name.startswith("sinsr") else "S-Lab License 1.0")
    assert zoo_entry("resshift-v3").url.endswith("/ResShift/releases/download/v2.0/resshift_realsrx4_s4_v3.pth")
    assert zoo_entry("sinsr-v1").filename == "SinSR_v1.pth"
    with pytest.raises(ValueError, match="sinsr-v1.*vq-f4"):
        zoo_entry("sinsr-v9")


def test_cache_root_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("SINSR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hub.cache_root() == tmp_path / "sinsr"
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path / "x"))
    assert hub.cache_root() == tmp_path / "x"
    assert hub.cache_root(tmp_path / "y") == tmp_path / "y"


# -- release downloads ----------------------------------------------------------------------


def test_first_download_converts_then_cache_hit_is_offline(env, server, vq_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    seen: list[tuple[int, int | None]] = []
    path = resolve_weights("vq-f4", kind="vq", progress=lambda n, t: seen.append((n, t)))

    assert path == env / "models" / "vq-f4.safetensors"
    meta = metadata(path)
    assert meta["sinsr.kind"] == "vq" and meta["sinsr.zoo"] == "vq-f4"
    assert meta["sinsr.source"] == zoo_entry("vq-f4").url
    assert meta["sinsr.source_sha256"] == sha(vq_pth)
    rec = json.loads((env / "models" / "vq-f4.json").read_text())
    assert rec["sha256"] == sha(path) and rec["size"] == path.stat().st_size
    assert seen[-1] == (len(vq_pth), len(vq_pth))
    assert cache_files(env) == ["models/vq-f4.json", "models/vq-f4.safetensors"]  # no .part left
    # the Hub was asked first (404), then the release
    assert server.count("/resolve/", "HEAD") == 1 and server.count("/releases/", "GET") == 1

    n = len(server.log)
    assert resolve_weights("vq-f4") == path  # cache hit: verified, no request at all
    assert resolve_weights("vq-f4", offline=True) == path
    assert len(server.log) == n


def test_unet_release_pth_becomes_a_self_describing_file(env, server, unet_pth):
    server.release("SinSR_v1.pth", unet_pth)
    path = resolve_weights("sinsr-v1", kind="unet")
    meta = metadata(path)
    assert meta["sinsr.kind"] == "unet" and meta["sinsr.zoo"] == "sinsr-v1"
    assert json.loads(meta["sinsr.preset"])["unet"]["model_channels"] == tiny_unet().model_channels
    assert meta["sinsr.licence"] == "CC BY-NC-SA 4.0"


def test_offline_env_with_cache(env, server, vq_pth, monkeypatch):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = download("vq-f4")
    n = len(server.log)
    for var in ("SINSR_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(var, "1")
        assert resolve_weights("vq-f4") == path
        monkeypatch.delenv(var)
    assert len(server.log) == n


def test_offline_without_cache_says_where_to_put_the_file(env, server, vq_pth, monkeypatch):
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    with pytest.raises(WeightsMissing) as info:
        resolve_weights("vq-f4")
    msg = str(info.value)
    incoming = env / "incoming" / "autoencoder_vq_f4.pth"
    assert "\n" not in msg and msg.startswith("vq-f4 is not in the cache and offline")
    assert msg.endswith(f"save it as {incoming}")
    assert "`sinsr download vq-f4`" in msg and zoo_entry("vq-f4").url in msg
    assert server.log == []

    # doing what the message says works, still offline
    incoming.parent.mkdir(parents=True)
    incoming.write_bytes(vq_pth)
    path = resolve_weights("vq-f4")
    assert metadata(path)["sinsr.source_sha256"] == sha(vq_pth)
    assert not incoming.exists() and server.log == []


def test_a_cache_that_cannot_take_a_model_is_named_in_one_line(env, server, vq_pth, monkeypatch):
    """SINSR_CACHE a file, a read-only folder, or one with a file for incoming/: one line
    naming SINSR_CACHE, before any download; a model already there is still served."""
    server.release("autoencoder_vq_f4.pth", vq_pth)
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text("not a folder")
    with pytest.raises(WeightsUnavailable) as info:
        download("vq-f4")
    assert str(info.value) == (
        f"vq-f4 is not in the cache, and SINSR_CACHE={env} is a file, not a directory: "
        "set SINSR_CACHE to a folder you can write"
    )
    assert not isinstance(info.value, WeightsMissing) and server.log == []
    env.unlink()
    (env / "incoming").parent.mkdir(parents=True)
    (env / "incoming").write_text("x")
    with pytest.raises(WeightsUnavailable, match=r"holds a file where its folders must be: set SINSR_CACHE"):
        resolve_weights("vq-f4")
    (env / "incoming").unlink()
    (env / "models" / "vq-f4.safetensors").mkdir(parents=True)
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("vq-f4")
    assert str(info.value) == f"{env / 'models' / 'vq-f4.safetensors'} is a directory, not a model file (remove it to fetch vq-f4 again)"
    (env / "models" / "vq-f4.safetensors").rmdir()
    path = download("vq-f4")
    n = len(server.log)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not Path(p).is_relative_to(env) and real_access(p, mode, **kw))
    assert resolve_weights("vq-f4") == path  # read-only now: what is there is served
    with pytest.raises(WeightsUnavailable, match=r"sinsr-v1 is not in the cache, and SINSR_CACHE=.* is not a "
                       r"writable directory \(permission denied\)"):
        resolve_weights("sinsr-v1")
    assert len(server.log) == n


def test_corrupt_cache_is_detected_and_fetched_again(env, server, vq_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = resolve_weights("vq-f4")
    good = path.read_bytes()
    corrupt(path, len(good) // 2)  # one flipped byte inside the tensor data

    with pytest.raises(WeightsMissing, match="failed sha256 verification") as info:
        resolve_weights("vq-f4", offline=True)
    assert "\n" not in str(info.value) and not path.exists()

    path.write_bytes(good)
    corrupt(path, len(good) // 2)
    assert resolve_weights("vq-f4") == path
    assert server.count("/releases/", "GET") == 2
    assert sha(path) == json.loads((env / "models" / "vq-f4.json").read_text())["sha256"]
    assert metadata(path)["sinsr.source_sha256"] == sha(vq_pth)


@pytest.mark.parametrize("mode", ["short", "nolength"])
def test_interrupted_download_leaves_nothing_behind(env, server, vq_pth, mode):
    server.release("autoencoder_vq_f4.pth", vq_pth, mode=mode)
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("vq-f4")
    msg = str(info.value)
    assert "\n" not in msg and zoo_entry("vq-f4").url in msg
    if mode == "short":  # Content-Length said more than arrived
        assert f"received {len(vq_pth) // 2} of {len(vq_pth)} bytes" in msg
    else:  # no length to check: the truncated file does not convert
        assert "not usable" in msg
    assert cache_files(env) == []

    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = resolve_weights("vq-f4")
    assert metadata(path)["sinsr.source_sha256"] == sha(vq_pth)


def test_stalled_server_times_out(env, server, vq_pth, monkeypatch):
    import socket

    monkeypatch.setattr(fetch, "HTTP_TIMEOUT", 0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/releases/x.pth"
        with pytest.raises(fetch.DownloadError, match="timed out"):
            fetch.fetch_url(url, env / "incoming", "x.pth", None)
    finally:
        sock.close()
    assert cache_files(env) == []


def test_404_everywhere_is_one_line(env, server):
    with pytest.raises(WeightsMissing) as info:
        resolve_weights("sinsr-v2")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("sinsr-v2 is not in the cache and could not be downloaded (")
    assert f"save it as {env / 'incoming' / 'SinSR_v2.pth'}" in msg
    assert f"Hub {REPO}/sinsr_v2.safetensors@main: no such file in the repository" in msg
    assert f"release on {server.base.split('//')[1]}: HTTP 404" in msg and zoo_entry("sinsr-v2").url in msg
    assert cache_files(env) == []


def test_upstream_file_changed_is_refused_until_accepted(env, server, vq_pth, unet_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = resolve_weights("vq-f4")
    path.unlink()  # e.g. the user cleans the cache; the first hash stays on record
    torch.manual_seed(1)
    buf = io.BytesIO()
    torch.save(VQModel(tiny_vq()).state_dict(), buf)
    server.release("autoencoder_vq_f4.pth", buf.getvalue())
    with pytest.raises(WeightsUnavailable, match="upstream file changed") as info:
        resolve_weights("vq-f4")
    assert str(env / "models" / "vq-f4.json") in str(info.value)
    (env / "models" / "vq-f4.json").unlink()
    assert metadata(resolve_weights("vq-f4"))["sinsr.source_sha256"] == sha(buf.getvalue()) != sha(vq_pth)


def test_wrong_kind_from_upstream_is_refused(env, server, vq_pth):
    server.release("SinSR_v1.pth", vq_pth)  # a VQ where a UNet belongs
    with pytest.raises(WeightsUnavailable, match="holds a vq checkpoint, expected unet"):
        resolve_weights("sinsr-v1")
    assert cache_files(env) == []


def test_download_force_fetches_again(env, server, vq_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    download("vq-f4")
    download("vq-f4")
    assert server.count("/releases/", "GET") == 1
    download("vq-f4", force=True)
    assert server.count("/releases/", "GET") == 2
    with pytest.raises(WeightsUnavailable, match="offline"):
        download("vq-f4", force=True, offline=True)
    path = resolve_weights("vq-f4")
    server.routes.clear()  # the release is gone: the copy in the cache is kept, and said so
    with pytest.raises(WeightsMissing) as info:
        download("vq-f4", force=True)
    msg = str(info.value)
    assert msg.startswith("vq-f4 could not be downloaded again (") and msg.endswith(f"the cached {path} is kept")
    assert "not in the cache" not in msg and resolve_weights("vq-f4") == path


# -- the Hub --------------------------------------------------------------------------------


def test_hub_file_is_preferred_and_verified(env, server, vq_pth, tmp_path):
    # our mirror holds the converted file; the release is never contacted
    server.release("autoencoder_vq_f4.pth", vq_pth)
    local = resolve_weights("vq-f4", cache_dir=tmp_path / "other")
    body = local.read_bytes()
    server.log.clear()
    server.hub_file("vq_f4.safetensors", body)

    seen: list[tuple[int, int | None]] = []
    path = resolve_weights("vq-f4", progress=lambda n, t: seen.append((n, t)))
    assert sha(path) == sha(body) and seen[-1] == (len(body), len(body))
    assert server.count("/releases/") == 0
    assert server.count(f"/{REPO}/resolve/main/vq_f4.safetensors", "GET") == 1
    rec = json.loads((env / "models" / "vq-f4.json").read_text())
    assert rec["source"] == f"hf://{REPO}@{COMMIT}/vq_f4.safetensors"
    blobs = list((env / "hub").rglob("blobs/*"))
    assert [b.name for b in blobs] == [sha(body)]  # huggingface_hub's own cache layout
    assert blobs[0].stat().st_ino == path.stat().st_ino  # hard-linked, not a second copy

    # corrupt (the blob shares the bytes): detected, downloaded again from the Hub
    corrupt(path, -10)
    data = path.read_bytes()
    assert sha(resolve_weights("vq-f4")) == sha(body)
    assert server.count("/resolve/", "GET") == 2 and server.count("/releases/") == 0

    # our copy gone, huggingface_hub's blob corrupt: its name (the LFS sha256) gives it away
    path.unlink()
    blob = next((env / "hub").rglob("blobs/*"))
    blob.write_bytes(bytes(data))
    assert sha(resolve_weights("vq-f4")) == sha(body)
    assert server.count("/resolve/", "GET") == 3

    # our copy gone, offline: huggingface_hub's cache still serves it, without a request
    path.unlink()
    n = len(server.log)
    assert sha(resolve_weights("vq-f4", offline=True)) == sha(body)
    assert len(server.log) == n


def test_hub_plain_safetensors_is_converted_and_revision_pinned(env, server, vq_pth, monkeypatch):
    sd = VQModel(tiny_vq()).state_dict()
    body = st_save({k: v.contiguous() for k, v in sd.items()})  # no sinsr metadata
    server.hub_file("vq_f4.safetensors", body, revision=COMMIT)
    zoo = tuple(dataclasses.replace(e, revision=COMMIT) if e.name == "vq-f4" else e for e in zoo_module.ZOO)
    monkeypatch.setattr(zoo_module, "ZOO", zoo)
    path = resolve_weights("vq-f4")
    meta = metadata(path)
    assert meta["sinsr.kind"] == "vq" and meta["sinsr.source_sha256"] == sha(body)
    assert server.count(f"/resolve/{COMMIT}/vq_f4.safetensors", "GET") == 1


def test_hub_disabled_by_empty_repo(env, server, vq_pth, monkeypatch):
    monkeypatch.setenv("SINSR_HUB_REPO", "")
    server.release("autoencoder_vq_f4.pth", vq_pth)
    resolve_weights("vq-f4")
    assert server.count("/resolve/") == 0


# -- paths and listing ----------------------------------------------------------------------


def test_local_path_passes_through(env, server, tmp_path):
    f = tmp_path / "my weights.pth"
    f.write_bytes(b"anything")
    assert resolve_weights(str(f)) == f
    assert resolve_weights(f, kind="unet") == f
    with pytest.raises(WeightsUnavailable, match="no such file, and not a model name"):
        resolve_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsUnavailable, match="is not a file"):
        resolve_weights(str(tmp_path))
    with pytest.raises(WeightsUnavailable, match=r"^resshft-v1: no such file, and not a model name \(did you mean 'resshift-v1'\?\) \(known"):
        resolve_weights("resshft-v1")
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights("nothing-like-it")
    assert "did you mean" not in str(info.value)
    with pytest.raises(ValueError, match="vq-f4 is a vq model"):
        resolve_weights("vq-f4", kind="unet")
    assert server.log == []


def test_cached_status(env, server, vq_pth):
    before = {r["name"]: r for r in cached_status()}
    assert set(before) == {e.name for e in hub.ZOO} and not any(r["cached"] for r in before.values())
    assert before["sinsr-v1"]["licence"] == "CC BY-NC-SA 4.0" and before["sinsr-v1"]["kind"] == "unet"
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = download("vq-f4")
    after = {r["name"]: r for r in cached_status()}
    assert after["vq-f4"]["cached"] and after["vq-f4"]["path"] == str(path)
    assert after["vq-f4"]["size"] == path.stat().st_size and after["vq-f4"]["preset"] == "vq-f4-tiny"
    assert not after["sinsr-v1"]["cached"] and after["sinsr-v1"]["size"] is None


# -- no re-hash on every load ---------------------------------------------------------------


def test_cached_file_is_hashed_only_when_it_changed(env, server, vq_pth, monkeypatch):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = resolve_weights("vq-f4")
    calls: list[Path] = []
    real = fetch.sha256_file
    monkeypatch.setattr(fetch, "sha256_file", lambda p: calls.append(p) or real(p))

    for _ in range(3):
        assert resolve_weights("vq-f4") == path
    assert calls == []  # size, mtime and inode as recorded: no 0.7 GB hash per run

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))  # touched, content intact
    assert resolve_weights("vq-f4") == path and calls == [path]
    assert resolve_weights("vq-f4") == path and calls == [path]  # the new stat was recorded
    assert server.count("/releases/", "GET") == 1


def test_truncated_cache_is_caught_and_fetched_again(env, server, vq_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    path = resolve_weights("vq-f4")
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    assert resolve_weights("vq-f4") == path
    assert server.count("/releases/", "GET") == 2
    assert sha(path) == json.loads((env / "models" / "vq-f4.json").read_text())["sha256"]


def test_verify_cache_rehashes_everything(env, server, vq_pth, unet_pth):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    server.release("SinSR_v1.pth", unet_pth)
    vq, unet = resolve_weights("vq-f4"), resolve_weights("sinsr-v1")
    rows = {r["name"]: r for r in verify_cache()}
    assert rows["vq-f4"]["status"] == rows["sinsr-v1"]["status"] == "ok"
    assert rows["vq-f4"]["sha256"] == sha(vq) and rows["resshift-v1"]["status"] == "not cached"

    # corruption that leaves size, mtime and inode as recorded (bit rot) is invisible to a
    # plain load, by design; --verify finds it, deletes the file, and the next load refetches
    corrupt(vq, len(vq.read_bytes()) // 2)
    sidecar = env / "models" / "vq-f4.json"
    rec = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**rec, "stat": hub._stat_key(vq)}))
    assert resolve_weights("vq-f4") == vq and sha(vq) != rec["sha256"]
    rows = {r["name"]: r for r in verify_cache(["vq-f4", "sinsr-v1"])}
    assert rows["vq-f4"]["status"] == "corrupt" and not vq.exists() and rows["sinsr-v1"]["status"] == "ok"
    assert metadata(resolve_weights("vq-f4"))["sinsr.source_sha256"] == sha(vq_pth)
    assert server.count("/releases/autoencoder_vq_f4.pth", "GET") == 2


# -- no network ------------------------------------------------------------------------------


def test_unreachable_hub_is_one_failed_connection_not_a_retry_loop(env, server, monkeypatch):
    """No network: the Hub check fails at once and huggingface_hub (5 retries, ~25 s) is never called."""
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    zoo = tuple(dataclasses.replace(e, url=f"http://127.0.0.1:{port}/releases/{e.filename}") for e in hub.ZOO)
    monkeypatch.setattr(zoo_module, "ZOO", zoo)

    def never(*args, **kwargs):
        raise AssertionError("huggingface_hub called although the Hub cannot be reached")

    monkeypatch.setattr(fetch, "fetch_hub", never)
    with pytest.raises(WeightsMissing) as info:
        resolve_weights("sinsr-v1")
    msg = str(info.value)
    assert "\n" not in msg and msg.count("cannot connect") == 2
    assert f"Hub {REPO}/sinsr_v1.safetensors@main: cannot connect" in msg
    assert "`sinsr download sinsr-v1`" in msg and str(env / "incoming" / "SinSR_v1.pth") in msg


def test_http_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv("SINSR_HTTP_TIMEOUT", raising=False)
    assert hub.http_timeout() == hub.HTTP_TIMEOUT == 30.0
    monkeypatch.setenv("SINSR_HTTP_TIMEOUT", "2.5")
    assert hub.http_timeout() == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("SINSR_HTTP_TIMEOUT", bad)
        with pytest.raises(ValueError, match="SINSR_HTTP_TIMEOUT"):
            hub.http_timeout()


# -- mirrors -------------------------------------------------------------------------------


def test_export_mirror_is_what_sinsr_hub_repo_reads(env, server, vq_pth, unet_pth, tmp_path, monkeypatch):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    server.release("SinSR_v1.pth", unet_pth)
    mirror = tmp_path / "mirror"
    written = export_mirror(mirror, ["sinsr-v1", "vq-f4"])
    assert sorted(p.name for p in written) == ["README.md", "SHA256SUMS", "sinsr_v1.safetensors", "vq_f4.safetensors"]
    sums = dict(reversed(line.split("  ")) for line in (mirror / "SHA256SUMS").read_text().splitlines())
    assert sums == {f: sha(mirror / f) for f in ("sinsr_v1.safetensors", "vq_f4.safetensors")}
    card = (mirror / "README.md").read_text()
    assert card.startswith("---\nlicense: other\n")  # two licences: CC BY-NC-SA (SinSR) and S-Lab (ResShift)
    for text in ("CC BY-NC-SA 4.0", "S-Lab License 1.0", "non-commercial", "SINSR_HUB_REPO",
                 zoo_entry("sinsr-v1").url, sums["vq_f4.safetensors"]):
        assert text in card
    only_sinsr = export_mirror(tmp_path / "m2", ["sinsr-v1"])
    assert (only_sinsr[-1]).read_text().startswith("---\nlicense: cc-by-nc-sa-4.0\n")
    with pytest.raises(ValueError, match="already exists"):
        export_mirror(mirror, ["vq-f4"])
    export_mirror(mirror, ["vq-f4"], force=True)  # the earlier sinsr_v1 would be uploaded, unlisted
    assert sorted(p.name for p in mirror.iterdir()) == ["README.md", "SHA256SUMS", "vq_f4.safetensors"]
    export_mirror(mirror, ["sinsr-v1", "vq-f4"], force=True)

    # uploaded as a repo, it serves a fresh machine: no release request, the same bytes
    for f in sums:
        server.hub_file(f, (mirror / f).read_bytes(), repo="someone/sinsr-mirror")
    monkeypatch.setenv("SINSR_HUB_REPO", "someone/sinsr-mirror")
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path / "fresh"))
    n = server.count("/releases/")
    for name, f in (("sinsr-v1", "sinsr_v1.safetensors"), ("vq-f4", "vq_f4.safetensors")):
        assert sha(resolve_weights(name)) == sums[f]
    assert server.count("/releases/") == n
    assert {r["name"]: r["hub"] for r in cached_status()}["vq-f4"] == "someone/sinsr-mirror/vq_f4.safetensors@main"
    monkeypatch.delenv("SINSR_HUB_REPO")
    assert {r["name"]: r["hub"] for r in cached_status()}["vq-f4"] is None


def test_a_file_of_another_architecture_is_never_cached_under_a_zoo_name(env, server, monkeypatch):
    """The zoo knows each model's architecture: another size is refused in one line, not cached,
    whether it is downloaded, put in incoming/ or already cached (before this was checked)."""
    other = dataclasses.replace(tiny_vq(), n_embed=32)  # not the (tiny) zoo's vq-f4
    buf = io.BytesIO()
    torch.save(VQModel(other).state_dict(), buf)
    server.release("autoencoder_vq_f4.pth", buf.getvalue())
    with pytest.raises(WeightsMissing, match=r"autoencoder_vq_f4\.pth from .* is not the vq-f4 architecture "
                                             r"\(n_embed 32 \(expected 64\)\)"):
        resolve_weights("vq-f4")
    assert cache_files(env) == []

    p = hub.CachePaths(env, zoo_entry("vq-f4"))
    p.incoming.write_bytes(buf.getvalue())
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as err:
        resolve_weights("vq-f4")
    assert str(err.value).endswith(f"(delete or replace {p.incoming})") and "n_embed 32 (expected 64)" in str(err.value)
    assert cache_files(env) == ["incoming/autoencoder_vq_f4.pth"]  # the user's file stays, nothing is cached

    # a file cached before the check: verified bytes, wrong model -> one line naming it, kept
    monkeypatch.setitem(VQ_PRESETS, "vq-f4-tiny", other)  # as if the check had not been there
    p.incoming.unlink()
    p.incoming.write_bytes(buf.getvalue())
    assert resolve_weights("vq-f4") == p.weights
    monkeypatch.setitem(VQ_PRESETS, "vq-f4-tiny", tiny_vq())
    with pytest.raises(WeightsUnavailable, match=rf"^{p.weights} is not the vq-f4 architecture .*delete it to fetch vq-f4 again$"):
        resolve_weights("vq-f4")
    assert p.weights.is_file()


def test_the_real_zoo_refuses_a_small_model_under_an_official_name(tmp_path, monkeypatch, unet_pth):
    """The audit's case: a 3 M-parameter UNet saved as incoming/SinSR_v1.pth is not sinsr-v1."""
    monkeypatch.setenv("SINSR_CACHE", str(tmp_path))
    monkeypatch.setenv("SINSR_OFFLINE", "1")
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "SinSR_v1.pth").write_bytes(unet_pth)
    with pytest.raises(WeightsUnavailable, match=r"SinSR_v1\.pth from https://github.com/.* is not the sinsr-v1 "
                                                 r"architecture \(model_channels 32 \(expected 160\), "):
        resolve_weights("sinsr-v1")
    assert not (tmp_path / "models" / "sinsr-v1.safetensors").exists()
    assert (tmp_path / "incoming" / "SinSR_v1.pth").read_bytes() == unet_pth


def test_export_force_removes_what_an_earlier_export_wrote_and_keeps_the_rest(env, server, vq_pth, unet_pth, tmp_path):
    server.release("autoencoder_vq_f4.pth", vq_pth)
    server.release("SinSR_v1.pth", unet_pth)
    out = tmp_path / "mirror"
    export_mirror(out, ["sinsr-v1", "vq-f4"])
    (out / "notes.txt").write_text("mine")
    warned: list[str] = []
    export_mirror(out, ["sinsr-v1"], force=True, warn=warned.append)
    # vq_f4.safetensors was the earlier export's (in its SHA256SUMS, bytes unchanged): gone, from
    # the folder only (the cache's copy it was linked to stays)
    assert sorted(c.name for c in out.iterdir()) == ["README.md", "SHA256SUMS", "notes.txt", "sinsr_v1.safetensors"]
    assert hub.CachePaths(env, zoo_entry("vq-f4")).weights.is_file()
    assert "vq_f4" not in (out / "README.md").read_text()
    assert warned == [f"{out}: 1 file(s) this export did not write stay and would be uploaded too "
                      "(not in its SHA256SUMS or model card): notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"

    # a listed file the user changed since is not sinsr's any more: kept, and named
    export_mirror(out, ["sinsr-v1", "vq-f4"], force=True)
    (out / "vq_f4.safetensors").unlink()
    (out / "vq_f4.safetensors").write_bytes(b"edited")
    warned.clear()
    export_mirror(out, ["sinsr-v1"], force=True, warn=warned.append)
    assert (out / "vq_f4.safetensors").read_bytes() == b"edited"
    assert warned and warned[0].endswith("notes.txt, vq_f4.safetensors")
