"""Dataset formats by name; each module holds its classes, palette and layout reader."""

import inspect

from deeplab_xception.errors import UserError
from deeplab_xception.segment.datasets import ade20k, cityscapes, coco, generic, voc
from deeplab_xception.segment.datasets.base import Example, SegmentationSet

FORMATS = {"voc": voc, "cityscapes": cityscapes, "ade20k": ade20k, "coco": coco,
           "generic": generic}


def load_dataset(format, root, split, **options):
    """The `split` of the dataset at `root`, read as `format` (a key of FORMATS).

    Empty options are left out, so callers may pass e.g. `categories=()` for any format.
    """
    options = {key: value for key, value in options.items() if value}
    if format not in FORMATS:
        raise UserError(f"dataset format {format!r} is not one of {', '.join(FORMATS)}")
    loader = FORMATS[format].load
    accepted = set(inspect.signature(loader).parameters) - {"root", "split"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(f"dataset option {unknown[0]!r} does not apply to {format} "
                        f"(options: {', '.join(sorted(accepted)) or 'none'})")
    return loader(root, split, **options)


__all__ = ["FORMATS", "Example", "SegmentationSet", "load_dataset"]
