"""Cityscapes fine annotations, evaluated on the 19 train classes.

Layout: leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png and
gtFine/<split>/<city>/<stem>_gtFine_labelIds.png. Label ids map to train ids
with the official table; every other id becomes 255 (ignore).
"""

import glob
import os

import numpy as np

from deeplab_xception.errors import UserError
from deeplab_xception.preprocessing import IGNORE_LABEL
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, train_id_table

# (train class, its label id in *_labelIds.png, color) for the 19 evaluated classes.
TRAIN_CLASSES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)), ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)), ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)), ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
)
CLASSES = tuple(name for name, _, _ in TRAIN_CLASSES)
PALETTE = np.array([color for _, _, color in TRAIN_CLASSES], np.uint8)

# Every label id that is not a train class is ignored.
LABEL_ID_TO_TRAIN_ID = train_id_table(len(CLASSES), {
    **{value: IGNORE_LABEL for value in range(256)},
    **{label_id: train_id for train_id, (_, label_id, _) in enumerate(TRAIN_CLASSES)}})

EVAL_CROP_SIZE = (1025, 2049)  # the official eval pads the 1024x2048 images to this
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def load(root, split="val"):
    image_dir = os.path.join(root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise UserError(f"{image_dir}: no such split folder")
    examples = []
    for path in sorted(glob.glob(os.path.join(image_dir, "*", "*" + IMAGE_SUFFIX))):
        city = os.path.basename(os.path.dirname(path))
        stem = os.path.basename(path)[:-len(IMAGE_SUFFIX)]
        examples.append(Example(stem, path,
                                os.path.join(root, "gtFine", split, city, stem + LABEL_SUFFIX)))
    return SegmentationSet(CLASSES, PALETTE, examples, source=image_dir,
                           label_table=LABEL_ID_TO_TRAIN_ID)
