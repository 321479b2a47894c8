"""Turning a weights argument (zoo name, URL, archive, path) into a local path.

Nothing is downloaded unless the user names a URL or a zoo entry; archives
are unpacked once into the cache and reused.
"""

import hashlib
import os
import shutil
import tarfile
import tempfile

import keras

from deeplab_xception.errors import UserError
from deeplab_xception.weights.zoo import ZOO

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def default_cache_dir():
    """$DEEPLAB_XCEPTION_CACHE, else deeplab_xception/ under the Keras cache (~/.keras)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.environ.get("DEEPLAB_XCEPTION_CACHE") or os.path.join(keras_home, "deeplab_xception")


def _is_url(source):
    return source.startswith(("http://", "https://"))


def _download(url, cache_dir):
    try:
        return keras.utils.get_file(origin=url, cache_dir=cache_dir, cache_subdir="downloads")
    except Exception as e:  # get_file reports every network and file failure as Exception
        raise UserError(f"{url}: download failed ({str(e).splitlines()[0]})") from None


def _extract_checkpoint(archive, cache_dir):
    """Unpacks the checkpoint files (`*.ckpt*`) of an archive into one cache directory."""
    stat = os.stat(archive)
    key = hashlib.sha1(f"{os.path.abspath(archive)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    stem = os.path.basename(archive).split(".")[0]
    target = os.path.join(cache_dir, "extracted", f"{stem}-{key.hexdigest()[:12]}")
    if os.path.isdir(target):
        return target
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
        os.replace(staging, target)
    except (tarfile.TarError, EOFError, OSError) as e:
        if os.path.isdir(target):  # unpacked meanwhile by another process
            return target
        raise UserError(f"{archive}: not a readable archive ({e.__class__.__name__})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def local_path(weights, cache_dir=None):
    """A local model file, weights file, checkpoint prefix or directory for `weights`."""
    source = os.fspath(weights)
    cache_dir = cache_dir or default_cache_dir()
    if source in ZOO:
        source = ZOO[source].url
    if _is_url(source):
        source = _download(source, cache_dir)
    if source.endswith(ARCHIVE_SUFFIXES):
        if not os.path.isfile(source):
            raise UserError(f"{source}: no such file")
        return _extract_checkpoint(source, cache_dir)
    return source
