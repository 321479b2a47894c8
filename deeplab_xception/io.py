"""File I/O every job shares: images through OpenCV, and writes that never leave half a file."""

import contextlib
import errno
import json
import os
import re
import tempfile

import cv2
import numpy as np

from deeplab_xception.errors import ArgumentError, UserError


# What the file system answers when a file cannot be written where asked.
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success.

    A write that fails for the file system's reasons (read-only, full, no permission)
    is a UserError naming `path`, and leaves nothing behind.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path),
                                   dir=directory)
        os.close(fd)
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in WRITE_ERRORS:
            raise
        raise UserError(f"{path}: cannot write it ({e.strerror})") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)


def check_output_dir(path, argument="output_dir"):
    """Raises an ArgumentError naming `argument`, before any work, unless files can be written
    in folder `path` (made later, by the first write, when missing): not a file, not read-only."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArgumentError(argument, f"{path} is a file, not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ArgumentError(argument, f"{path} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(existing) else "permission denied"
        raise ArgumentError(argument, f"{path} is not writable ({reason})")


def _read_only(folder):
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends file descriptor 2 to /dev/null: libpng and libjpeg print their complaints about a
    broken file there, before OpenCV returns None and the caller names the file itself."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def image_size(path):
    """(height, width) from the file's header, without decoding the pixels; None when
    neither PIL nor the Radiance HDR header (which PIL does not read) can tell, and then
    only decoding can."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the caller applies its own limit, by name
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # PIL raises many kinds for files it cannot parse
        return _radiance_size(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return height, width


RADIANCE_SIZE = re.compile(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)\n")


def _radiance_size(path):
    """(height, width) from a Radiance .hdr header ("#?RADIANCE", lines, a blank line, then
    "-Y rows +X columns"), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    match = RADIANCE_SIZE.search(head) if head.startswith((b"#?RADIANCE", b"#?RGBE")) else None
    if not match:
        return None
    first, second = int(match.group(3)), int(match.group(6))
    return (first, second) if match.group(2) == b"Y" else (second, first)


def read_image(path, exif_orientation=True):
    """RGB uint8 H x W x 3 from any file OpenCV reads.

    IMREAD_COLOR turns gray, RGBA and 16-bit images into 8-bit color (as
    tf.io.decode_image does for training). `exif_orientation` rotates photos
    upright; dataset images are read as stored (False), because their masks
    are drawn in stored-pixel coordinates.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    flags = cv2.IMREAD_COLOR if exif_orientation else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        with _native_stderr_silenced():
            image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error:  # OpenCV's own limits (over 2**30 pixels), a decoder's failure
        image = None
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_image(path, image):
    """Writes an RGB (or single-channel) uint8 array atomically; format from the extension."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ext = os.path.splitext(os.fspath(path))[1] or ".png"
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise UserError(f"{path}: cannot encode an image with extension {ext}")
    with atomic_path(path) as tmp:
        encoded.tofile(tmp)


@contextlib.contextmanager
def open_npy(path, shape, dtype=np.float32):
    """A memory-mapped .npy array of `shape` to fill in, so a large array never has to fit in
    memory; it appears at `path` only once the block exits without an error."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        # The file is sparse: on a full disk, the first write into a hole would kill the
        # process with SIGBUS. Reserving its blocks now turns that into an OSError here.
        if hasattr(os, "posix_fallocate"):
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        yield array
        array.flush()


def write_json(path, data, indent=2):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)
