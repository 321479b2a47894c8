"""ImageNet input: TF's TFRecord shards or a directory per class, as tf.data pipelines.

TFRecords are those TF's ImageNet build scripts write: `image/encoded` and
`image/class/label` (1 to 1000; 0 is background). In the directory layout the
sorted class folder names get labels 1, 2, ... the same way.
"""

import os

import tensorflow as tf

from deeplab_xception.data.files import (TF_IMAGE_EXTENSIONS, is_image_file, read_tfrecords,
                                         shard_files, tfrecord_files)
from deeplab_xception.errors import UserError
from deeplab_xception.pretrain import preprocessing

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}
NUM_CLASSES = 1001  # labels 1 to 1000 and the background at 0
AUTOTUNE = tf.data.AUTOTUNE


def check_tfrecord(path):
    """A UserError naming `path` and the feature when its first record lacks one we read."""
    try:
        record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise UserError(f"{path}: not a readable TFRecord file ({e.message.splitlines()[0]})") from None
    if record is None:
        raise UserError(f"{path}: TFRecord file holds no records")
    try:
        example = tf.train.Example.FromString(record.numpy())
    except Exception:
        raise UserError(f"{path}: records are not tf.train.Example protos") from None
    features = example.features.feature
    for name, spec in FEATURES.items():
        kind = "bytes_list" if spec.dtype == tf.string else "int64_list"
        if name not in features or features[name].WhichOneof("kind") != kind:
            raise UserError(f"{path}: records lack the feature '{name}' ({kind})")


def check(data):
    """Fails early, with a UserError, on data the pipelines could only fail on mid-run."""
    for pattern in filter(None, (data.train, data.eval)):
        if data.format == "tfrecord":
            check_tfrecord(tfrecord_files(pattern)[0])
        elif data.format == "directory":
            class_directory_files(pattern)
        else:
            raise UserError(f"data.format: {data.format!r} is not 'tfrecord' or 'directory'")


def class_directory_files(directory):
    """(paths, labels) of every image under <directory>/<class>/."""
    if not os.path.isdir(directory):
        raise UserError(f"{directory}: no such data directory")
    classes = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    paths, labels = [], []
    for label, name in enumerate(classes, start=1):
        for file in sorted(os.listdir(os.path.join(directory, name))):
            if is_image_file(file, TF_IMAGE_EXTENSIONS):
                paths.append(os.path.join(directory, name, file))
                labels.append(label)
    if not paths:
        raise UserError(f"{directory}: no images in class folders (expected <dir>/<class>/<image>)")
    return paths, labels


def _parse_record(record):
    features = tf.io.parse_single_example(record, FEATURES)
    return features["image/encoded"], features["image/class/label"]


def _read_file(path, label):
    return tf.io.read_file(path), tf.cast(label, tf.int64)


def _records(data, pattern, input_context=None, training=False):
    """(encoded image, label) pairs; for training sharded per input pipeline, shuffled, endless."""
    if data.format == "tfrecord":
        records = read_tfrecords(pattern, input_context, shuffle=training, repeat=training)
        parse = _parse_record
    else:
        records = shard_files(class_directory_files(pattern), input_context, shuffle=training,
                              repeat=training)
        parse = _read_file
    if training:
        records = records.shuffle(data.shuffle_buffer)
    return records.map(parse, num_parallel_calls=AUTOTUNE)


def train_dataset(data, input_context, batch_size):
    """Endless, shuffled batches of (preprocessed images, labels) for one input pipeline.

    Files are sharded per pipeline; the file order is reshuffled every epoch
    without a fixed seed, so asynchronous workers (which all get pipeline 0)
    read in independent orders.
    """
    records = _records(data, data.train, input_context, training=True)
    return (records
            .map(lambda encoded, label: (preprocessing.train_image(encoded, data.image_size), label),
                 num_parallel_calls=AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .prefetch(AUTOTUNE))


def eval_dataset(data, batch_size):
    """One pass, in order, of centrally cropped eval images."""
    records = _records(data, data.eval)
    return (records
            .map(lambda encoded, label: (preprocessing.eval_image(
                encoded, data.image_size, data.central_fraction), label),
                num_parallel_calls=AUTOTUNE)
            .batch(batch_size)
            .prefetch(AUTOTUNE))
