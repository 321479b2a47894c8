"""Verified downloads from a local HTTP server: good, corrupted, interrupted, colliding names, a tampered cache."""

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading

import pytest

from deeplab_xception.errors import UserError
from deeplab_xception.weights.download import DIGEST_MARKER, fetch, split_digest
from deeplab_xception.weights.sources import local_path
from deeplab_xception.weights.zoo import ZOO, Pretrained

GOOD = b"checkpoint archive bytes " * 4000
OTHER = b"another archive, same file name " * 3000


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


class Files(http.server.BaseHTTPRequestHandler):
    """Serves `routes`: {path: body}; a body in `truncated` announces more bytes than it sends,
    one in `unannounced` is sent without a Content-Length (its end is the connection's)."""

    routes, truncated, unannounced, requests = {}, set(), set(), []

    def do_GET(self):
        self.requests.append(self.path)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.path not in self.unannounced:
            self.send_header("Content-Length",
                             str(len(body) + (1000 if self.path in self.truncated else 0)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Files.routes, Files.truncated, Files.unannounced, Files.requests = {}, set(), set(), []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield Files, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(cache):
    downloads = cache / "downloads"
    return sorted(os.listdir(downloads)) if downloads.is_dir() else []


def test_good_download_is_cached_with_its_digest_and_not_fetched_again(server, tmp_path):
    files, base = server
    files.routes["/m/model.tar.gz"] = GOOD
    path, digest = fetch(base + "/m/model.tar.gz", tmp_path, _sha256(GOOD))
    assert open(path, "rb").read() == GOOD and digest == _sha256(GOOD)
    with open(path + ".sha256.json") as f:
        assert json.load(f) == {"url": base + "/m/model.tar.gz", "sha256": _sha256(GOOD)}
    assert fetch(base + "/m/model.tar.gz", tmp_path) == (path, digest)
    assert files.requests == ["/m/model.tar.gz"]
    assert _leftovers(tmp_path) == sorted([os.path.basename(path), os.path.basename(path) + ".sha256.json"])


def test_corrupted_download_is_a_one_line_error_and_leaves_nothing(server, tmp_path):
    files, base = server
    files.routes["/model.tar.gz"] = OTHER
    with pytest.raises(UserError) as error:
        fetch(base + "/model.tar.gz", tmp_path, _sha256(GOOD))
    message = str(error.value)
    assert "\n" not in message and f"sha256 {_sha256(OTHER)} differs from the expected" in message
    assert _leftovers(tmp_path) == []


def test_interrupted_download_is_refused_and_a_later_one_succeeds(server, tmp_path):
    files, base = server
    files.routes["/model.tar.gz"] = GOOD[:5000]
    files.truncated.add("/model.tar.gz")
    with pytest.raises(UserError, match=r"download incomplete \(5000 of 6000 bytes\)"):
        fetch(base + "/model.tar.gz", tmp_path)
    assert _leftovers(tmp_path) == []
    files.routes["/model.tar.gz"] = GOOD
    files.truncated.clear()
    path, _ = fetch(base + "/model.tar.gz", tmp_path)
    assert open(path, "rb").read() == GOOD


def test_two_urls_with_the_same_file_name_never_collide(server, tmp_path):
    files, base = server
    files.routes.update({"/a/model.tar.gz": GOOD, "/b/model.tar.gz": OTHER})
    first, _ = fetch(base + "/a/model.tar.gz", tmp_path)
    second, _ = fetch(base + "/b/model.tar.gz", tmp_path)
    assert first != second and os.path.basename(first).endswith("-model.tar.gz")
    assert open(first, "rb").read() == GOOD and open(second, "rb").read() == OTHER


def test_tampered_cache_is_detected_and_replaced(server, tmp_path, capsys):
    files, base = server
    files.routes["/model.tar.gz"] = GOOD
    path, _ = fetch(base + "/model.tar.gz", tmp_path)  # digest recorded on first use
    with open(path, "r+b") as f:
        f.write(b"tampered")
    assert fetch(base + "/model.tar.gz", tmp_path) == (path, _sha256(GOOD))
    assert open(path, "rb").read() == GOOD and len(files.requests) == 2
    assert "cached copy does not match its digest; downloading" in capsys.readouterr().err
    # The server now serves other bytes: the digest recorded at first use refuses them.
    files.routes["/model.tar.gz"] = OTHER
    os.remove(path)
    with pytest.raises(UserError, match="differs from the one recorded on first download"):
        fetch(base + "/model.tar.gz", tmp_path)
    assert not os.path.exists(path)


def test_url_digest_suffix_is_checked(server, tmp_path):
    files, base = server
    files.routes["/weights.keras"] = GOOD
    url = base + "/weights.keras"
    with pytest.raises(UserError, match="differs from the expected"):
        local_path(url + DIGEST_MARKER + _sha256(OTHER), tmp_path)
    assert open(local_path(url + DIGEST_MARKER + _sha256(GOOD).upper(), tmp_path), "rb").read() == GOOD
    with pytest.raises(UserError, match="expected 64 hex digits after #sha256="):
        split_digest(url + "#sha256=abc")
    assert split_digest("runs/a#b/model.keras") == ("runs/a#b/model.keras", None)


def test_zoo_digest_is_checked_when_set(server, tmp_path, monkeypatch):
    files, base = server
    files.routes["/zoo.tar.gz"] = OTHER
    record = Pretrained(name="pinned", url=base + "/zoo.tar.gz", sha256=_sha256(GOOD),
                        backbone="xception_65", kind="backbone", output_stride=32, dataset="ImageNet")
    monkeypatch.setitem(ZOO, "pinned", record)
    with pytest.raises(UserError, match="zoo.tar.gz: sha256 .* differs from the expected"):
        local_path("pinned", tmp_path)
    assert _leftovers(tmp_path) == []


def test_local_file_digest_is_checked_and_the_file_kept(tmp_path):
    weights = tmp_path / "model.keras"
    weights.write_bytes(GOOD)
    assert local_path(f"{weights}#sha256={_sha256(GOOD)}", tmp_path) == str(weights)
    with pytest.raises(UserError, match="model.keras: sha256 .* differs from the expected"):
        local_path(f"{weights}#sha256={_sha256(OTHER)}", tmp_path)
    assert weights.read_bytes() == GOOD


def _archive(files):
    """A .tar.gz holding {name: bytes}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_download_cut_short_without_content_length_is_neither_kept_nor_recorded(server, tmp_path):
    files, base = server
    archive = _archive({"model.ckpt.index": GOOD, "model.ckpt.data-00000-of-00001": OTHER})
    url = base + "/model.tar.gz"
    files.routes["/model.tar.gz"] = archive[:len(archive) // 2]
    files.unannounced.update({"/model.tar.gz", "/notes.bin"})
    with pytest.raises(UserError) as error:
        fetch(url, tmp_path)
    assert str(error.value) == (f"{url}: download incomplete (no Content-Length, and the file "
                                "ends early: EOFError); nothing was kept")
    assert _leftovers(tmp_path) == []
    files.routes["/model.tar.gz"] = archive  # the whole file: kept, its digest recorded
    path, digest = fetch(url, tmp_path)
    assert open(path, "rb").read() == archive and digest == _sha256(archive)
    files.routes["/notes.bin"] = GOOD
    with pytest.raises(UserError, match="no Content-Length and a .bin file cannot be checked whole"):
        fetch(base + "/notes.bin", tmp_path)
    assert len(_leftovers(tmp_path)) == 2


def test_files_replaced_in_an_unpacked_archive_are_unpacked_again(tmp_path, capsys):
    members = {"model.ckpt.index": GOOD, "model.ckpt.data-00000-of-00001": OTHER}
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(_archive(members))
    unpacked = local_path(str(archive), tmp_path / "cache")
    assert {n: open(os.path.join(unpacked, n), "rb").read() for n in members} == members
    for change in (lambda: open(os.path.join(unpacked, "model.ckpt.index"), "wb").write(b"mine"),
                   lambda: os.remove(os.path.join(unpacked, "model.ckpt.data-00000-of-00001")),
                   lambda: open(os.path.join(unpacked, "model.ckpt.meta"), "wb").write(b"added")):
        change()
        assert local_path(str(archive), tmp_path / "cache") == unpacked
        assert capsys.readouterr().err == (f"{unpacked}: unpacked files differ from the ones "
                                           f"unpacked from {archive}; unpacking it again\n")
        assert {n: open(os.path.join(unpacked, n), "rb").read() for n in members} == members
        assert sorted(os.listdir(unpacked)) == sorted([*members, "unpacked.sha256.json"])
    assert local_path(str(archive), tmp_path / "cache") == unpacked  # intact: reused quietly
    assert capsys.readouterr().err == ""
