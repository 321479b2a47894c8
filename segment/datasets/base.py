"""What every dataset format provides: class names, a palette, and checked (image, label) pairs."""

import dataclasses
import os

import numpy as np
from PIL import Image

from deeplab_xception.errors import UserError
from deeplab_xception.preprocessing import IGNORE_LABEL
from deeplab_xception.io import read_image


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    image_path: str
    label_path: str  # the file (or file#id) the label comes from, for messages


def bit_palette(num_classes):
    """PASCAL VOC's color map: class bits spread over the high bits of R, G and B."""
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        value, shift = index, 7
        while value:
            for channel in range(3):
                palette[index, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
            shift -= 1
    return palette


def read_index_png(path):
    """Class indices from a palette (mode P) or 8-bit gray PNG, never its colors."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such label file")
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(f"{path}: label image has mode {image.mode}; "
                                "expected class indices (palette or 8-bit gray)")
            return np.array(image, dtype=np.uint8)
    except OSError:
        raise UserError(f"{path}: not a readable label image") from None


def read_split_file(path):
    """Example names, one a line, from an ImageSets-style split file."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such split file")
    with open(path) as f:
        names = [line.split()[0] for line in f if line.strip()]
    if not names:
        raise UserError(f"{path}: split file lists no examples")
    return names


class SegmentationSet:
    """One split of a dataset; `read` returns an image and its checked label.

    Labels are train ids: 0..num_classes-1, and IGNORE_LABEL (255) for pixels
    that count neither in the loss nor in the metrics.
    """

    def __init__(self, classes, palette, examples, read_label, source):
        self.classes = tuple(classes)
        self.palette = np.asarray(palette, np.uint8)
        self.examples = tuple(examples)
        self.source = source
        self._read_label = read_label
        if not self.examples:
            raise UserError(f"{source}: no examples found")

    @property
    def num_classes(self):
        return len(self.classes)

    def __len__(self):
        return len(self.examples)

    def read_label(self, example, image_shape=None):
        label = self._read_label(example)
        if image_shape is not None and label.shape[:2] != tuple(image_shape[:2]):
            raise UserError(f"{example.label_path}: label is {label.shape[1]}x{label.shape[0]} "
                            f"but its image {example.image_path} is "
                            f"{image_shape[1]}x{image_shape[0]}")
        bad = label[(label >= self.num_classes) & (label != IGNORE_LABEL)]
        if bad.size:
            raise UserError(f"{example.label_path}: label value {int(bad.max())} is out of range "
                            f"for {self.num_classes} classes (0..{self.num_classes - 1}, "
                            f"{IGNORE_LABEL} = ignore)")
        return label

    def read(self, index):
        example = self.examples[index]
        image = read_image(example.image_path)
        return image, self.read_label(example, image.shape)
