"""A tiny, learnable stand-in for ImageNet, written in ImageNet's own formats.

Each class is one colored shape (its color and form both say the class) at a
random place and size on a noisy background, so a small model learns it in a
few dozen steps. Labels start at 1, like TF's ImageNet TFRecords: 0 is the
background class of the 1001-way classifier.
"""

import os

import cv2
import numpy as np

from deeplab_xception.data.examples import encode_png, write_tfrecord
from deeplab_xception.io import write_image

COLORS = ((230, 40, 40), (40, 200, 40), (40, 80, 230), (230, 210, 30), (200, 40, 200), (30, 200, 210))
SHAPES = ("disk", "square", "triangle", "bar", "ring", "cross")
MAX_CLASSES = len(COLORS)


def draw(label, rng, size):
    """RGB uint8 image of class `label` (1-based)."""
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    color = tuple(int(c) for c in COLORS[label - 1])
    shape = SHAPES[label - 1]
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if shape == "disk":
        cv2.circle(image, (cx, cy), r, color, -1)
    elif shape == "square":
        cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    elif shape == "triangle":
        points = np.array([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], np.int32)
        cv2.fillPoly(image, [points], color)
    elif shape == "bar":
        cv2.rectangle(image, (cx - r, cy - r // 3), (cx + r, cy + r // 3), color, -1)
    elif shape == "ring":
        cv2.circle(image, (cx, cy), r, color, max(2, r // 3))
    else:
        cv2.line(image, (cx - r, cy), (cx + r, cy), color, max(2, r // 3))
        cv2.line(image, (cx, cy - r), (cx, cy + r), color, max(2, r // 3))
    return image


def _example(image, label):
    return {"image/encoded": encode_png(image), "image/format": b"PNG", "image/class/label": label,
            "image/height": image.shape[0], "image/width": image.shape[1]}


def _labels(count, num_classes, rng):
    return rng.permutation(np.arange(count) % num_classes) + 1


def write_tfrecords(directory, num_classes=4, train_images=256, eval_images=64, image_size=64,
                    train_shards=4, seed=0):
    """Writes train-0000i-of-N and validation-00000-of-00001 TFRecord shards.

    Returns {"train": glob, "eval": glob, "train_images": n, "eval_images": m,
    "num_classes": num_classes + 1} (the +1 is the background class).
    """
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes: 1 to {MAX_CLASSES}, got {num_classes}")
    rng = np.random.default_rng(seed)
    for split, count, shards in (("train", train_images, train_shards), ("validation", eval_images, 1)):
        labels = _labels(count, num_classes, rng)
        for shard in range(shards):
            path = os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}")
            write_tfrecord(path, (_example(draw(int(label), rng, image_size), int(label))
                                  for label in labels[shard::shards]))
    return {"train": os.path.join(directory, "train-*"),
            "eval": os.path.join(directory, "validation-*"),
            "train_images": train_images, "eval_images": eval_images,
            "num_classes": num_classes + 1}


def write_class_directories(directory, num_classes=4, images_per_class=8, image_size=64, seed=0):
    """Writes <directory>/class_<k>/<i>.png, the directory-per-class layout."""
    rng = np.random.default_rng(seed)
    for label in range(1, num_classes + 1):
        for i in range(images_per_class):
            write_image(os.path.join(directory, f"class_{label}", f"{i:04d}.png"),
                        draw(label, rng, image_size))
    return directory
