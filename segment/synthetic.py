"""A small learnable segmentation set, generated: colored shapes on a noisy background.

Each class is one shape drawn in its own hue (with jittered brightness), so a
tiny model learns it in a few dozen steps; written in the generic layout
(images/, masks/, classes.txt, train.txt, val.txt) so that every reader and
the whole pipeline run on it unchanged.
"""

import os

import cv2
import numpy as np

from deeplab_xception.io import write_image
from deeplab_xception.data.classes import write_class_list

CLASSES = ("background", "disc", "square", "triangle")
PALETTE = ((0, 0, 0), (220, 40, 40), (40, 200, 40), (50, 80, 230))


def _draw(image, mask, class_id, rng, size):
    radius = int(rng.integers(size // 6, size // 3 + 1))
    margin = int(radius * 1.25)
    cy, cx = (int(v) for v in rng.integers(margin, size - margin, 2))
    color = np.array(PALETTE[class_id], float) * rng.uniform(0.7, 1.1)
    color = tuple(int(c) for c in np.clip(color, 0, 255))
    if class_id == 1:
        for target, value in ((image, color), (mask, class_id)):
            cv2.circle(target, (cx, cy), radius, value, thickness=-1)
    elif class_id == 2:
        for target, value in ((image, color), (mask, class_id)):
            cv2.rectangle(target, (cx - radius, cy - radius), (cx + radius, cy + radius), value,
                          thickness=-1)
    else:  # 1.25x wider and taller than the square's radius: about the disc's area
        half = int(radius * 1.25)
        points = np.array([(cx, cy - half), (cx - half, cy + half),
                           (cx + half, cy + half)], np.int32)
        for target, value in ((image, color), (mask, class_id)):
            cv2.fillPoly(target, [points], value)


def make_example(rng, size):
    """(RGB uint8 image, uint8 mask) with one to three shapes, each of another class: every
    class is as common as the others, so each one's IoU is measured on as many pixels."""
    # A grey background, slightly tinted: no shape's hue is ever close to it.
    base = rng.uniform(60, 160) + rng.uniform(-15, 15, 3)
    image = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    shapes = rng.permutation(np.arange(1, len(CLASSES)))[:int(rng.integers(1, len(CLASSES)))]
    for class_id in shapes:
        _draw(image, mask, int(class_id), rng, size)
    return image, mask


def write_synthetic_dataset(root, num_train=96, num_val=48, size=65, seed=0):
    """Writes the set under `root` (generic layout) and returns `root`."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        names = [f"{split}_{i:04d}" for i in range(count)]
        for name in names:
            image, mask = make_example(rng, size)
            write_image(os.path.join(root, "images", name + ".png"), image)
            write_image(os.path.join(root, "masks", name + ".png"), mask)
        with open(os.path.join(root, f"{split}.txt"), "w") as f:
            f.write("".join(name + "\n" for name in names))
    write_class_list(os.path.join(root, "classes.txt"), CLASSES, PALETTE)
    return root


def write_unless_there(root):
    """The set at `root` (`data.synthetic`), written on first use: its class list, written
    last, says it is whole."""
    if not os.path.isfile(os.path.join(root, "classes.txt")):
        print(f"writing the generated shapes set to {root} (data.synthetic)", flush=True)
        write_synthetic_dataset(root)
