"""ADE20K scene parsing (the ADEChallengeData2016 release, 150 classes).

Layout: images/<training|validation>/<name>.jpg and
annotations/<training|validation>/<name>.png (8-bit, 0 = "other", 1..150 the
classes). Label 0 becomes 255 (ignore) and the others shift down by one, as
the benchmark and DeepLab score it.
"""

import glob
import os

import numpy as np

from deeplab_xception.errors import UserError
from deeplab_xception.preprocessing import IGNORE_LABEL
from segment.datasets.base import Example, SegmentationSet, bit_palette, read_index_png

CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator",
    "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman",
    "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt",
    "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
)
PALETTE = bit_palette(len(CLASSES) + 1)[1:]
SPLIT_FOLDERS = {"train": "training", "val": "validation"}

# 0 ("other") -> ignore, k -> k - 1.
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, np.uint8)
LABEL_TO_TRAIN_ID[1:len(CLASSES) + 1] = np.arange(len(CLASSES))


def load(root, split="val"):
    folder = SPLIT_FOLDERS.get(split, split)
    image_dir = os.path.join(root, "images", folder)
    if not os.path.isdir(image_dir):
        raise UserError(f"{image_dir}: no such split folder")
    examples = []
    for path in sorted(glob.glob(os.path.join(image_dir, "*.jpg"))):
        name = os.path.splitext(os.path.basename(path))[0]
        examples.append(Example(name, path, os.path.join(root, "annotations", folder, name + ".png")))
    return SegmentationSet(CLASSES, PALETTE, examples, _read_label, source=image_dir)


def _read_label(example):
    label = read_index_png(example.label_path)
    if label.max() > len(CLASSES):
        raise UserError(f"{example.label_path}: label value {int(label.max())} is out of range "
                        f"for ADE20K (0..{len(CLASSES)})")
    return LABEL_TO_TRAIN_ID[label]
