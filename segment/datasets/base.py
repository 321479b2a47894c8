"""What every dataset format provides: class names, a palette, and checked (image, label) pairs."""

import dataclasses
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from deeplab_xception.runtime.limits import DEFAULT_MAX_PIXELS
from deeplab_xception.errors import UserError
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.io import read_image


@dataclasses.dataclass(frozen=True)
class Example:
    name: str
    image_path: str
    label_path: str  # the file (or file#id) the label comes from, for messages


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


def train_id_table(num_classes, mapping=None):
    """Stored label value (0..255) -> train id, -1 where the value is out of range.

    By default a value is its own train id (0..num_classes-1, and 255 = ignore);
    `mapping` ({stored value: train id}) replaces that, as for Cityscapes' label ids.
    """
    table = np.full(256, -1, np.int32)
    if mapping is None:
        table[:num_classes] = np.arange(num_classes)
        table[IGNORE_LABEL] = IGNORE_LABEL
    else:
        for value, train_id in mapping.items():
            table[value] = train_id
    return table


def _header(path, what):
    """PIL's lazy open: mode, (height, width) and palette, without decoding pixels; a file
    of more than DEFAULT_MAX_PIXELS is refused by name (a decompression bomb)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such {what} file")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the limit below, by name
    try:
        with Image.open(path) as image:
            palette = image.getpalette() if image.mode == "P" else None
            mode, size = image.mode, (image.height, image.width)
    except OSError:
        raise UserError(f"{path}: not a readable {'image' if what == 'image' else what + ' image'}"
                        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if size[0] * size[1] > DEFAULT_MAX_PIXELS:
        raise UserError(f"{path}: {size[1]}x{size[0]} pixels, more than the "
                        f"{DEFAULT_MAX_PIXELS / 1e6:g} megapixels a dataset image may have")
    return mode, size, palette


@dataclasses.dataclass(frozen=True)
class FileList:
    """What streaming needs, from file headers only: paths, and the palette of each
    palette label (index into `palettes`, -1 for gray labels)."""
    image_paths: tuple
    label_paths: tuple
    palette_ids: tuple
    palettes: tuple  # (256, 3) uint8 arrays, each distinct palette once


class SegmentationSet:
    """One split of a dataset; `read` returns an image and its checked label.

    Labels are train ids: 0..num_classes-1, and IGNORE_LABEL (255) for pixels
    that count neither in the loss nor in the metrics. Label files hold stored
    values that `label_table` maps to train ids; a format whose labels are not
    files (COCO polygons) gives `read_label` and `label_size` instead.
    `ignored_classes` are logits the metric leaves out (ADE20K's "other").
    """

    def __init__(self, classes, palette, examples, source, label_table=None, read_label=None,
                 label_size=None, ignored_classes=()):
        self.classes = tuple(classes)
        self.palette = np.asarray(palette, np.uint8)
        self.examples = tuple(examples)
        self.source = source
        self.label_table = (train_id_table(len(self.classes)) if label_table is None
                            else np.asarray(label_table, np.int32))
        self.custom_labels = read_label
        self._label_size = label_size
        self.ignored_classes = tuple(ignored_classes)
        if not self.examples:
            raise UserError(f"{source}: no examples found")

    @property
    def num_classes(self):
        return len(self.classes)

    def __len__(self):
        return len(self.examples)

    def out_of_range(self, path, value):
        return UserError(f"{path}: label value {value} is out of range for {self.num_classes} "
                         f"classes ({self.describe_values()})")

    def describe_values(self):
        valid = np.flatnonzero(self.label_table >= 0)
        return f"stored values {', '.join(_ranges(valid))}"

    def read_label(self, example, image_shape=None):
        if self.custom_labels is not None:
            label = self.custom_labels(example)
        else:
            stored = read_index_png(example.label_path)
            label = self.label_table[stored]
            if (label < 0).any():
                raise self.out_of_range(example.label_path, int(stored[label < 0].max()))
            label = label.astype(np.uint8)
        if image_shape is not None and label.shape[:2] != tuple(image_shape[:2]):
            raise _size_mismatch(example, label.shape, image_shape)
        return label

    def read(self, index):
        example = self.examples[index]
        image = read_image(example.image_path, exif_orientation=False)
        return image, self.read_label(example, image.shape)

    def file_list(self, progress=False):
        """Checks every example's headers (sizes agree, labels are index images) and returns
        the FileList the input pipeline streams from."""
        palettes, palette_ids = {}, []
        examples = tqdm(self.examples, desc="checking headers", unit="example", leave=False,
                        disable=not progress or None)
        for example in examples:
            _, image_size, _ = _header(example.image_path, "image")
            if self.custom_labels is not None:
                label_size, palette = self._label_size(example), None
            else:
                mode, label_size, palette = _header(example.label_path, "label")
                if mode not in ("P", "L"):
                    raise UserError(f"{example.label_path}: label image has mode {mode}; "
                                    "expected class indices (palette or 8-bit gray)")
            if label_size != image_size:
                raise _size_mismatch(example, label_size, image_size)
            if palette is None:
                palette_ids.append(-1)
            else:
                colors = np.zeros((256, 3), np.uint8)
                given = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
                colors[:len(given)] = given
                palette_ids.append(palettes.setdefault(colors.tobytes(), len(palettes)))
        return FileList(tuple(e.image_path for e in self.examples),
                        tuple(e.label_path for e in self.examples), tuple(palette_ids),
                        tuple(np.frombuffer(key, np.uint8).reshape(256, 3) for key in palettes))


def _size_mismatch(example, label_shape, image_shape):
    return UserError(f"{example.label_path}: label is {label_shape[1]}x{label_shape[0]} "
                     f"but its image {example.image_path} is {image_shape[1]}x{image_shape[0]}")


def _ranges(values):
    """[0, 1, 2, 5, 255] -> ["0..2", "5", "255"]."""
    runs, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            runs.append(f"{start}..{value}" if value > start else f"{value}")
            start = None
    return runs
