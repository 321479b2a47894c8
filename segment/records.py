"""Examples as DeepLab's build scripts store them: encoded image + encoded PNG label of train ids.

Written once by `deeplab-xception records` (every label decoded and checked
on the way), read back by the input pipeline: the fast path for big sets
and remote storage.
"""

import math
import os

import cv2
import tensorflow as tf
from tqdm import tqdm

from deeplab_xception.errors import UserError
from deeplab_xception.io import atomic_path

PASSTHROUGH_FORMATS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string),
}


def encode(dataset, index):
    """(image bytes, image format, label PNG bytes, height, width, name) of one checked example."""
    example = dataset.examples[index]
    image, label = dataset.read(index)
    ext = os.path.splitext(example.image_path)[1].lower()
    if ext in PASSTHROUGH_FORMATS:
        with open(example.image_path, "rb") as f:
            image_bytes, image_format = f.read(), PASSTHROUGH_FORMATS[ext]
    else:
        image_bytes = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
        image_format = "png"
    label_bytes = cv2.imencode(".png", label)[1].tobytes()
    return image_bytes, image_format, label_bytes, image.shape[0], image.shape[1], example.name


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def to_tf_example(image_bytes, image_format, label_bytes, height, width, name):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(image_bytes),
        "image/filename": _bytes(name.encode()),
        "image/format": _bytes(image_format.encode()),
        "image/height": _int(height),
        "image/width": _int(width),
        "image/channels": _int(3),
        "image/segmentation/class/encoded": _bytes(label_bytes),
        "image/segmentation/class/format": _bytes(b"png"),
    }))


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
    with tqdm(total=len(dataset), desc=f"{split} -> TFRecord", unit="image",
              disable=None) as progress:
        for shard, path in enumerate(paths):
            with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
                for index in range(shard * per_shard, min(len(dataset), (shard + 1) * per_shard)):
                    writer.write(to_tf_example(*encode(dataset, index)).SerializeToString())
                    progress.update()
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
