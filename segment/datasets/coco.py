"""COCO instance annotations rasterized into semantic masks with pycocotools.

Layout (as released): annotations/instances_<split>.json and <split>/<file_name>.
Class 0 is background; classes 1..K are the chosen categories (all of the
file's by default), in the order given. Crowd regions are ignored (255), and
smaller objects are painted over larger ones so that they stay visible.
"""

import contextlib
import io
import os

import numpy as np
from pycocotools.coco import COCO

from deeplab_xception.errors import UserError
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.data.classes import bit_palette
from deeplab_xception.segment.datasets.base import Example, SegmentationSet


def _read_annotations(path):
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timings
            return COCO(path)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a COCO annotation file ({e})") from None


def load(root, split="val2017", categories=None):
    """`categories`: COCO category names that become classes 1..K (default: all)."""
    annotation_file = os.path.join(root, "annotations", f"instances_{split}.json")
    coco = _read_annotations(annotation_file)
    by_name = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    names = list(categories) if categories else sorted(by_name, key=by_name.get)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise UserError(f"{annotation_file}: no category named {unknown[0]!r}")
    class_of = {by_name[name]: index for index, name in enumerate(names, start=1)}
    examples = [
        Example(info["file_name"], os.path.join(root, split, info["file_name"]),
                f"{annotation_file}#{info['id']}")
        for info in coco.loadImgs(sorted(coco.getImgIds()))]

    def read_label(example):
        image_id = int(example.label_path.rsplit("#", 1)[1])
        info = coco.loadImgs(image_id)[0]
        label = np.zeros((info["height"], info["width"]), np.uint8)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        for annotation in sorted(annotations, key=lambda a: -a["area"]):
            if annotation["category_id"] not in class_of and not annotation.get("iscrowd"):
                continue
            mask = coco.annToMask(annotation).astype(bool)
            label[mask] = (IGNORE_LABEL if annotation.get("iscrowd")
                           else class_of[annotation["category_id"]])
        return label

    def label_size(example):
        info = coco.loadImgs(int(example.label_path.rsplit("#", 1)[1]))[0]
        return info["height"], info["width"]

    classes = ("background",) + tuple(names)
    return SegmentationSet(classes, bit_palette(len(classes)), examples, source=annotation_file,
                           read_label=read_label, label_size=label_size)
