"""Which files hold data: image files by extension, and the TFRecord shards of a pattern.

One list per decoder: `read_image` (OpenCV) reads IMAGE_EXTENSIONS; the tf.data
input pipelines decode with `tf.io.decode_image`, which reads the TF_ ones.
"""

from deeplab_xception.backend import import_tensorflow
from deeplab_xception.errors import UserError

IMAGE_EXTENSIONS = (".bmp", ".jp2", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm",
                    ".tif", ".tiff", ".webp")
TF_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")  # in the order a dataset folder is searched


def is_image_file(name, extensions=IMAGE_EXTENSIONS):
    return name.lower().endswith(extensions)


def tfrecord_files(pattern):
    """The files matching the glob `pattern` (on any file system TensorFlow reads), sorted."""
    files = sorted(import_tensorflow().io.gfile.glob(pattern)) if pattern else []
    if not files:
        raise UserError(f"{pattern}: no TFRecord files match" if pattern
                        else "no TFRecord file pattern given")
    return files
