"""tf.train.Example records as TensorFlow's ImageNet and DeepLab's build scripts store them: the
one writer of both applications' TFRecords, one value per feature."""

import numbers

import cv2
import numpy as np

from deeplab_xception.backend import import_tensorflow
from deeplab_xception.io import atomic_path


def encode_png(image):
    """PNG bytes of an RGB (or single-channel) uint8 array."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    return cv2.imencode(".png", image)[1].tobytes()


def _feature(tf, value):
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, numbers.Integral):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    raise TypeError(f"an Example feature holds bytes, str or an integer, not {type(value).__name__}")


def serialize(features):
    """One serialized tf.train.Example: `features` maps each name to a bytes, str or int value."""
    tf = import_tensorflow()
    feature = {name: _feature(tf, value) for name, value in features.items()}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecord(path, examples):
    """Writes `examples` (feature dicts, see `serialize`) to the TFRecord file `path`, which
    appears only once all are written."""
    tf = import_tensorflow()
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
        for features in examples:
            writer.write(serialize(features))
