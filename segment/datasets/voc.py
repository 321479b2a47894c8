"""PASCAL VOC 2012 segmentation, with the SBD-augmented "trainaug" labels.

Layout (the VOC2012 folder of VOCdevkit): JPEGImages/<name>.jpg,
SegmentationClass/<name>.png (palette PNGs whose indices are the classes,
255 on object borders), ImageSets/Segmentation/<split>.txt. The trainaug
split reads SegmentationClassAug/<name>.png (8-bit index PNGs), as DeepLab does.
"""

import os

from deeplab_xception.data import classes
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, read_split_file

CLASSES, PALETTE = classes.NAMED["voc"]
AUGMENTED_SPLITS = ("trainaug",)


def load(root, split="val", label_dir=None):
    """`label_dir` overrides where labels come from (SegmentationClass or ...Aug)."""
    if label_dir is None:
        label_dir = "SegmentationClassAug" if split in AUGMENTED_SPLITS else "SegmentationClass"
    names = read_split_file(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"))
    examples = [Example(name, os.path.join(root, "JPEGImages", f"{name}.jpg"),
                        os.path.join(root, label_dir, f"{name}.png")) for name in names]
    return SegmentationSet(CLASSES, PALETTE, examples, source=f"{root} ({split})")
