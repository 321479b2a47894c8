"""Verified downloads into the cache.

A download streams into a temporary file beside its cache name, hashed as it
arrives, and is renamed only once complete and matching its digest: the one
given (a zoo record's `sha256`, or `URL#sha256=HEX`), else the one recorded
when the URL was first downloaded. A download sent without a Content-Length
must read to its end in its format (tar, zip, HDF5). Every download's digest
is recorded in a JSON file beside it and checked again on every later use; a
cached file that no longer matches is removed and downloaded again. Cache names start with a
hash of the full URL, so two URLs ending in the same file name never share one.
"""

import hashlib
import http.client
import json
import os
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

from tqdm import tqdm

from deeplab_xception.errors import UserError
from deeplab_xception.io import atomic_path, write_json

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60
DIGEST_MARKER = "#sha256="
_SHA256 = re.compile("[0-9a-f]{64}")


def split_digest(source):
    """(source, expected sha256 or None) for 'SOURCE#sha256=HEX' or a plain source."""
    base, marker, digest = source.rpartition(DIGEST_MARKER)
    if not marker:
        return source, None
    if not _SHA256.fullmatch(digest.lower()):
        raise UserError(f"{source}: expected 64 hex digits after {DIGEST_MARKER}")
    return base, digest.lower()


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(url, cache_dir):
    """Where `url` is cached: downloads/<hash of the URL>-<its file name>."""
    name = os.path.basename(urllib.parse.urlsplit(url).path) or "download"
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "downloads", f"{key}-{name}")


def _record_path(path):
    return path + ".sha256.json"


def recorded_sha256(path):
    """The digest recorded when the file at `path` was downloaded, None if none was."""
    try:
        with open(_record_path(path)) as f:
            return json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fetch(url, cache_dir, sha256=None):
    """(path, sha256) of the verified cached copy of `url`, downloaded unless one is there."""
    path = cache_path(url, cache_dir)
    expected = sha256 or recorded_sha256(path)
    if os.path.isfile(path):
        if expected and file_sha256(path) == expected:
            return path, expected
        reason = "does not match its digest" if expected else "has no recorded digest"
        print(f"{path}: cached copy {reason}; downloading {url} again", file=sys.stderr)
        os.remove(path)
    return path, _download(url, path, expected, given=sha256 is not None)


def _download(url, path, expected, given):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            actual, length_announced = _stream(url, out)
        if not length_announced:
            _check_whole(tmp, url)
        if expected and actual != expected:
            known = "the expected" if given else "the one recorded on first download,"
            raise UserError(f"{url}: sha256 {actual} differs from {known} {expected}; "
                            "download discarded")
        write_json(_record_path(path), {"url": url, "sha256": actual})
    return actual


def _stream(url, out):
    """Writes the body of `url` to `out`; its sha256, once every announced byte arrived."""
    digest, received = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                      desc=os.path.basename(urllib.parse.urlsplit(url).path), disable=None) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise UserError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e.__class__.__name__
        raise UserError(f"{url}: download failed ({reason})") from None
    if total is not None and received != total:
        raise UserError(f"{url}: download incomplete ({received} of {total} bytes); "
                        "nothing was kept")
    return digest.hexdigest(), total is not None


def _check_whole(path, url):
    """Raises UserError unless the file at `path`, downloaded from `url` without a
    Content-Length, reads to its end in its format (a cut connection looks like an end)."""
    name = urllib.parse.urlsplit(url).path.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.isfile():
                        with tar.extractfile(member) as f:
                            while f.read(CHUNK_BYTES):
                                pass
        elif name.endswith((".keras", ".zip")):
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is not None:
                    raise zipfile.BadZipFile
        elif name.endswith(".h5"):
            import h5py

            with h5py.File(path, "r"):
                pass
        else:
            raise UserError(f"{url}: the server sent no Content-Length and a .{name.rpartition('.')[2]} "
                            "file cannot be checked whole; nothing was kept")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
        raise UserError(f"{url}: download incomplete (no Content-Length, and the file ends "
                        f"early: {e.__class__.__name__}); nothing was kept") from None
