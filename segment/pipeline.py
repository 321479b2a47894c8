"""The one tf.data pipeline for training and evaluation, fed by TFRecord shards or a dataset folder.

From a folder, the pipeline holds file paths, not bytes: each input pipeline
takes its share of the list, and files are read and decoded in parallel
inside tf.data, so memory and start-up do not grow with the dataset and the
graph shipped to parameter-server workers stays small. Images decode as
stored (TensorFlow ignores EXIF orientation, as the masks do); labels become
train ids in TensorFlow (palette PNGs through their own palette, then the
format's table), so folder input runs on remote workers too. COCO labels
are rasterized from polygons by pycocotools per example (a numpy_function,
which runs in the local process only: under the parameter-server strategy
convert COCO to TFRecords first).
"""

import contextlib
import re

import numpy as np
import tensorflow as tf

from deeplab_xception.data.files import read_tfrecords, shard_files
from deeplab_xception.errors import UserError
from deeplab_xception.segment import augment, records

SHUFFLE_BUFFER = 1000
OUT_OF_RANGE = "is out of range for"


def record_pairs(pattern, input_context=None, shuffle=False):
    """This input pipeline's share of (image bytes, label bytes) from TFRecord shards;
    `shuffle` reorders the shards every pass."""
    return read_tfrecords(pattern, input_context, shuffle).map(records.parse)


def decode_image(path):
    """uint8 H x W x 3 as stored: gray, RGBA, 16-bit and palette files as OpenCV reads them."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.ensure_shape(image, (None, None, 3))


def _palette_indices(encoded, palette):
    """Class indices of a palette PNG, which TensorFlow decodes to its colors: each color
    maps back to its first entry in the file's palette."""
    colors = tf.cast(tf.io.decode_png(encoded, channels=3), tf.int32)
    keys = colors[..., 0] * 65536 + colors[..., 1] * 256 + colors[..., 2]
    palette_keys = palette[:, 0] * 65536 + palette[:, 1] * 256 + palette[:, 2]
    order = tf.argsort(palette_keys, stable=True)
    position = tf.searchsorted(tf.gather(palette_keys, order)[None], tf.reshape(keys, (1, -1)))
    return tf.reshape(tf.gather(order, tf.minimum(position[0], 255)), tf.shape(keys))


class LabelDecoder:
    """Label file -> uint8 H x W x 1 train ids inside tf.data, checked per example: a value
    outside the format's table fails naming the file."""

    def __init__(self, dataset, files):
        self.dataset = dataset
        self.table = tf.constant(dataset.label_table)
        palettes = np.asarray(files.palettes, np.int32).reshape(-1, 256, 3)
        self.palettes = tf.constant(palettes if len(palettes) else np.zeros((1, 256, 3), np.int32))
        self.message = f" {OUT_OF_RANGE} {dataset.num_classes} classes ({dataset.describe_values()})"

    def __call__(self, index, path, palette_id):
        if self.dataset.custom_labels is not None:
            label = tf.numpy_function(self._read_custom, [index], tf.uint8, stateful=False)
            return tf.ensure_shape(label, (None, None))[..., None]
        encoded = tf.io.read_file(path)
        stored = tf.cond(palette_id >= 0,
                         lambda: _palette_indices(encoded, self.palettes[tf.maximum(palette_id, 0)]),
                         lambda: tf.cast(tf.io.decode_png(encoded, channels=1)[..., 0], tf.int32))
        label = tf.gather(self.table, stored)
        bad = label < 0
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [tf.strings.join([
            path, ": label value ",
            tf.strings.as_string(tf.reduce_max(tf.where(bad, stored, -1))), self.message])])
        with tf.control_dependencies([check]):
            return tf.cast(label, tf.uint8)[..., None]

    def _read_custom(self, index):
        return self.dataset.read_label(self.dataset.examples[int(index)])


def folder_examples(dataset, input_context=None, shuffle=False, files=None):
    """This input pipeline's share of a SegmentationSet as decoded (image, label) pairs.

    `files` (dataset.file_list(), header checks done) may be passed to reuse one scan;
    `shuffle` reshuffles the file order every pass, without a seed.
    """
    files = files or dataset.file_list(progress=True)
    decode_label = LabelDecoder(dataset, files)
    entries = shard_files((np.arange(len(dataset), dtype=np.int64), list(files.image_paths),
                           list(files.label_paths), np.asarray(files.palette_ids, np.int32)),
                          input_context, shuffle)

    def load(index, image_path, label_path, palette_id):
        return decode_image(image_path), decode_label(index, label_path, palette_id)

    return entries.map(load, num_parallel_calls=tf.data.AUTOTUNE)


@contextlib.contextmanager
def label_errors_reported(*datasets):
    """A label check that fails inside tf.data surfaces as the UserError naming the file; so
    does a file of `datasets` that TensorFlow cannot decode (its error names no file)."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        match = re.search(rf"\[([^\[\]]*{OUT_OF_RANGE}[^\[\]]*)\]", e.message)
        if match:
            raise UserError(match.group(1)) from None
        broken = next(filter(None, map(first_undecodable, datasets)), None)
        if broken is None:
            raise
        raise UserError(f"{broken}: not a readable image (TensorFlow cannot decode it: "
                        f"{e.message.splitlines()[0].strip()})") from None


def first_undecodable(dataset):
    """The first image or label file of `dataset` TensorFlow cannot decode, or None. Looked
    for, in parallel, only once a decode failed inside tf.data."""
    paths = [e.image_path for e in dataset.examples]
    if dataset.custom_labels is None:
        paths += [e.label_path for e in dataset.examples]

    def decoded(path):
        image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        return path, tf.shape(image)

    readable = (tf.data.Dataset.from_tensor_slices(paths)
                .map(decoded, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors())
    found = {path.decode() for path, _ in readable.as_numpy_iterator()}
    return next((path for path in paths if path not in found), None)


def decoded_examples(source, input_context=None, shuffle=False, files=None):
    """(image uint8 H x W x 3, label uint8 H x W x 1) of a TFRecord pattern or a SegmentationSet,
    decoded in parallel; `shuffle` (training) reorders them every pass."""
    if isinstance(source, str):
        pairs = record_pairs(source, input_context, shuffle)
        if shuffle:
            pairs = pairs.shuffle(SHUFFLE_BUFFER)
        return pairs.map(records.decode, num_parallel_calls=tf.data.AUTOTUNE)
    return folder_examples(source, input_context, shuffle, files)


def train_dataset(source, batch_size, crop_size, min_scale=0.5, max_scale=2.0, scale_step=0.25,
                  flip=True, input_context=None, files=None):
    """Infinite shuffled batches of `batch_size` (preprocessed crops, int32 labels) for one replica.

    `source`: a TFRecord file pattern, or a SegmentationSet (with its `files` when already
    checked)."""
    def augmented(image, label):
        return augment.train_augment(image, label, crop_size, min_scale, max_scale, scale_step,
                                     flip)

    return (decoded_examples(source, input_context, shuffle=True, files=files).repeat()
            .map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))
