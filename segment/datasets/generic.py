"""Any dataset laid out as images + index masks + a class list.

Layout: images/<name>.(jpg|jpeg|png), masks/<name>.png (8-bit index or
palette PNGs, 255 = ignore), classes.txt (one class a line, optionally
followed by its color as three integers "name r g b"; names may hold
spaces), and <split>.txt listing the names of a split.
"""

import os

from deeplab_xception.errors import UserError
from deeplab_xception.segment.datasets.base import Example, SegmentationSet, bit_palette, read_split_file

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def read_class_list(path):
    """(names, palette) from a class list file; missing colors come from VOC's color map."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such class list")
    names, colors = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            name, *color = line.rsplit(None, 3)
            if len(color) == 3 and all(v.isdigit() and int(v) < 256 for v in color):
                names.append(name.strip())
                colors.append(tuple(int(v) for v in color))
            else:
                names.append(line.strip())
                colors.append(None)
    if not names:
        raise UserError(f"{path}: the class list is empty")
    default = bit_palette(len(names))
    palette = [color or tuple(default[i]) for i, color in enumerate(colors)]
    return names, palette


def write_class_list(path, names, palette):
    """One "name r g b" line per class; names may hold spaces ("traffic light")."""
    with open(path, "w") as f:
        for name, color in zip(names, palette):
            f.write(f"{name} {' '.join(str(int(c)) for c in color)}\n")


def _image_path(root, name):
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(root, "images", name + ext)
        if os.path.isfile(path):
            return path
    raise UserError(f"{os.path.join(root, 'images', name)}: no image with an extension of "
                    f"{', '.join(IMAGE_EXTENSIONS)}")


def load(root, split="val"):
    names, palette = read_class_list(os.path.join(root, "classes.txt"))
    split_names = read_split_file(os.path.join(root, f"{split}.txt"))
    examples = [Example(name, _image_path(root, name), os.path.join(root, "masks", name + ".png"))
                for name in split_names]
    return SegmentationSet(names, palette, examples, source=f"{root} ({split})")

