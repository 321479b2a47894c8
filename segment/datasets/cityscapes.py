"""Cityscapes fine annotations, evaluated on the 19 train classes.

Layout: leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png and
gtFine/<split>/<city>/<stem>_gtFine_labelIds.png. Label ids map to train ids
with the official table; every other id becomes 255 (ignore).
"""

import glob
import os

from deeplab_xception.data import classes
from deeplab_xception.errors import UserError
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, train_id_table

TRAIN_CLASSES = classes.CITYSCAPES_TRAIN_CLASSES
CLASSES, PALETTE = classes.NAMED["cityscapes"]

# Every label id that is not a train class is ignored.
LABEL_ID_TO_TRAIN_ID = train_id_table(len(CLASSES), {
    **{value: IGNORE_LABEL for value in range(256)},
    **{label_id: train_id for train_id, (_, label_id, _) in enumerate(TRAIN_CLASSES)}})

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
