"""Turning a weights argument (zoo name, URL, archive, path) into a local path.

Nothing is downloaded unless the user names a URL or a zoo entry, and every
download is verified (`download.py`); archives are unpacked once into the
cache and reused, each file checked against the digest recorded when it was
unpacked. `SOURCE#sha256=HEX` checks any source against a digest.
"""

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile

from deeplab_xception.backend import default_cache_dir
from deeplab_xception.errors import UserError
from deeplab_xception.io import write_json
from deeplab_xception.weights.download import fetch, file_sha256, split_digest
from deeplab_xception.weights.zoo import ZOO

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
UNPACKED = "unpacked.sha256.json"  # beside an archive's unpacked files: {name: sha256}


def _is_url(source):
    return source.startswith(("http://", "https://"))


def _extract_checkpoint(archive, cache_dir, sha256=None):
    """Unpacks the checkpoint files (`*.ckpt*`) of an archive into one cache directory,
    named by the archive's digest when it is known, else by its path, size and time."""
    stat = os.stat(archive)
    key = sha256 or hashlib.sha1(
        f"{os.path.abspath(archive)}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    stem = os.path.basename(archive).split(".")[0]
    target = os.path.join(cache_dir, "extracted", f"{stem}-{key[:12]}")
    if os.path.isdir(target):
        if _unpacked_intact(target):
            return target
        print(f"{target}: unpacked files differ from the ones unpacked from {archive}; "
              "unpacking it again", file=sys.stderr)
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and ".ckpt" in os.path.basename(m.name)]
            if not members:
                raise UserError(f"{archive}: archive holds no checkpoint (no *.ckpt* files)")
            for member in members:  # flattened by basename: no path in the archive escapes staging
                with tar.extractfile(member) as src, open(
                        os.path.join(staging, os.path.basename(member.name)), "wb") as dst:
                    shutil.copyfileobj(src, dst)
        write_json(os.path.join(staging, UNPACKED), {name: file_sha256(os.path.join(staging, name))
                                                     for name in os.listdir(staging)})
        os.replace(staging, target)
    except (tarfile.TarError, EOFError, OSError) as e:
        if os.path.isdir(target):  # unpacked meanwhile by another process
            return target
        raise UserError(f"{archive}: not a readable archive ({e.__class__.__name__})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _unpacked_intact(folder):
    """Whether `folder` holds exactly the files unpacked into it, as unpacked (their digests
    are recorded beside them)."""
    try:
        with open(os.path.join(folder, UNPACKED)) as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        return False
    present = set(os.listdir(folder)) - {UNPACKED}
    return isinstance(recorded, dict) and present == set(recorded) and all(
        os.path.isfile(os.path.join(folder, name)) and not os.path.islink(os.path.join(folder, name))
        and file_sha256(os.path.join(folder, name)) == digest for name, digest in recorded.items())


def _check_local_digest(path, sha256):
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file (a digest can be checked on files only)")
    actual = file_sha256(path)
    if actual != sha256:
        raise UserError(f"{path}: sha256 {actual} differs from the expected {sha256}")


def local_path(weights, cache_dir=None):
    """A local model file, weights file, checkpoint prefix or directory for `weights`."""
    source, sha256 = split_digest(os.fspath(weights))
    cache_dir = cache_dir or default_cache_dir()
    if source in ZOO:
        source, sha256 = ZOO[source].url, sha256 or ZOO[source].sha256
    if _is_url(source):
        source, sha256 = fetch(source, cache_dir, sha256)
    elif sha256:
        _check_local_digest(source, sha256)
    if source.endswith(ARCHIVE_SUFFIXES):
        if not os.path.isfile(source):
            raise UserError(f"{source}: no such file")
        return _extract_checkpoint(source, cache_dir, sha256)
    return source
