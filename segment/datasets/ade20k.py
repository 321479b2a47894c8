"""ADE20K scene parsing (the ADEChallengeData2016 release) as DeepLab defines it: 151 classes.

Layout: images/<training|validation>/<name>.jpg and
annotations/<training|validation>/<name>.png (8-bit, 0 = "other", 1..150 the
classes). The official checkpoints have 151 logits: index 0 is "other",
whose pixels are ignored (255) in the loss and which the metric leaves out;
the stored values 1..150 are the train ids.
"""

import glob
import os

from deeplab_xception.data import classes
from deeplab_xception.errors import UserError
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, train_id_table

CLASSES, PALETTE = classes.NAMED["ade20k"]
OTHER = 0
SPLIT_FOLDERS = {"train": "training", "val": "validation"}

# 0 ("other") -> ignore; 1..150 stay.
LABEL_TO_TRAIN_ID = train_id_table(len(CLASSES), {
    OTHER: IGNORE_LABEL, **{value: value for value in range(1, len(CLASSES))}})


def load(root, split="val"):
    folder = SPLIT_FOLDERS.get(split, split)
    image_dir = os.path.join(root, "images", folder)
    if not os.path.isdir(image_dir):
        raise UserError(f"{image_dir}: no such split folder")
    examples = []
    for path in sorted(glob.glob(os.path.join(image_dir, "*.jpg"))):
        name = os.path.splitext(os.path.basename(path))[0]
        examples.append(Example(name, path, os.path.join(root, "annotations", folder, name + ".png")))
    return SegmentationSet(CLASSES, PALETTE, examples, source=image_dir,
                           label_table=LABEL_TO_TRAIN_ID, ignored_classes=(OTHER,))
