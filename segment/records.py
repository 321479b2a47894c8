"""Examples as DeepLab's build scripts store them: encoded image + encoded PNG label of train ids.

Written once by `deeplab-xception records` (every label decoded and checked
on the way), read back by the input pipeline: the fast path for big sets
and remote storage.
"""

import itertools
import math
import os

import tensorflow as tf
from tqdm import tqdm

from deeplab_xception.data.examples import encode_png, write_tfrecord
from deeplab_xception.errors import UserError

PASSTHROUGH_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string),
}


def example(dataset, index):
    """The features of one checked example: its image file's bytes when TensorFlow decodes its
    format, else a PNG, and its label as a PNG of train ids."""
    entry = dataset.examples[index]
    image, label = dataset.read(index)
    ext = os.path.splitext(entry.image_path)[1].lower()
    if ext in PASSTHROUGH_FORMATS:
        with open(entry.image_path, "rb") as f:
            image_bytes, image_format = f.read(), PASSTHROUGH_FORMATS[ext]
    else:
        image_bytes, image_format = encode_png(image), "png"
    return {
        "image/encoded": image_bytes,
        "image/filename": entry.name,
        "image/format": image_format,
        "image/height": image.shape[0],
        "image/width": image.shape[1],
        "image/channels": 3,
        "image/segmentation/class/encoded": encode_png(label),
        "image/segmentation/class/format": "png",
    }


def shard_paths(output_dir, split, num_shards):
    return [os.path.join(output_dir, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord")
            for i in range(num_shards)]


def write_tfrecords(dataset, output_dir, split, num_shards=4):
    """Writes `split` shards (each atomically), examples dealt out in order; returns the paths."""
    if num_shards < 1:
        raise UserError(f"num_shards: must be positive, got {num_shards}")
    num_shards = min(num_shards, len(dataset))
    per_shard = math.ceil(len(dataset) / num_shards)
    paths = shard_paths(output_dir, split, num_shards)
    with tqdm(range(len(dataset)), desc=f"{split} -> TFRecord", unit="image",
              disable=None) as progress:
        indices = iter(progress)
        for path in paths:
            write_tfrecord(path, (example(dataset, index)
                                  for index in itertools.islice(indices, per_shard)))
    return paths


def parse(serialized):
    """(image bytes, label bytes) of one serialized tf.train.Example."""
    features = tf.io.parse_single_example(serialized, FEATURES)
    return features["image/encoded"], features["image/segmentation/class/encoded"]


def decode(image_bytes, label_bytes):
    """uint8 H x W x 3 image and H x W x 1 label."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    label = tf.io.decode_png(label_bytes, channels=1)
    return image, label
