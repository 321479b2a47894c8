"""Any dataset laid out as images + index masks + a class list.

Layout: images/<name>.(jpg|jpeg|png|bmp), masks/<name>.png (8-bit index or
palette PNGs, 255 = ignore), classes.txt (one class a line, optionally
followed by its color as three integers "name r g b"; names may hold
spaces), and <split>.txt listing the names of a split.
"""

import os

from deeplab_xception.errors import UserError
from deeplab_xception.data.classes import read_class_list
from deeplab_xception.data.files import TF_IMAGE_EXTENSIONS
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, read_split_file



def _image_path(root, name):
    for ext in TF_IMAGE_EXTENSIONS:
        path = os.path.join(root, "images", name + ext)
        if os.path.isfile(path):
            return path
    raise UserError(f"{os.path.join(root, 'images', name)}: no image with an extension of "
                    f"{', '.join(TF_IMAGE_EXTENSIONS)}")


def load(root, split="val"):
    names, palette = read_class_list(os.path.join(root, "classes.txt"))
    split_names = read_split_file(os.path.join(root, f"{split}.txt"))
    examples = [Example(name, _image_path(root, name), os.path.join(root, "masks", name + ".png"))
                for name in split_names]
    return SegmentationSet(names, palette, examples, source=f"{root} ({split})")

