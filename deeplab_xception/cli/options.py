"""Options that several subcommands share, defined once.

Only the standard library here: `--help` must answer without TensorFlow or
Keras. The name lists below mirror the library's registries (a test checks).
"""

import argparse

from deeplab_xception.errors import ArgumentError

KINDS = ("deeplab", "classifier", "backbone")  # deeplab_xception.models.KINDS
DATASET_FORMATS = ("ade20k", "cityscapes", "coco", "generic", "voc")  # segment.datasets.FORMATS
NAMED_DATASETS = ("ade20k", "cityscapes", "voc")  # the formats with a fixed class list
EXPORT_FORMATS = ("onnx", "saved_model", "tflite")  # deeplab_xception.runtime.export.FORMATS
PRECISIONS = ("auto", "float32", "bfloat16")  # deeplab_xception.runtime.precision.PRECISIONS
DEFAULT_MAX_PIXELS = 100_000_000  # deeplab_xception.runtime.limits.DEFAULT_MAX_PIXELS
OUTPUT_STRIDES = (4, 8, 16, 32)  # every registered backbone's reachable_output_strides, together


def flag_message(error, flags):
    """A library error's message as the command line says it: an ArgumentError names the
    flag `flags[argument]` (the library names its API argument)."""
    return str(error.for_flags(flags) if isinstance(error, ArgumentError) else error)


def positive_scale(text):
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if scale <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text}")
    return scale


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


class TileAction(argparse.Action):
    """--tile auto | off | H W | N: stored as "auto", "off" or (H, W)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 1 and values[0] in ("auto", "off"):
            setattr(namespace, self.dest, values[0])
            return
        try:
            size = tuple(positive_int(v) for v in values)
        except argparse.ArgumentTypeError:
            size = ()
        if len(size) not in (1, 2):
            parser.error(f"argument {option_string}: expected auto, off, or a tile size H W "
                         f"(or N for N x N), got {' '.join(values)}")
        setattr(namespace, self.dest, size * (3 - len(size)))


def add_eval_options(parser):
    """--output-stride, --scales, --flip and --tile: how a DeepLab model is evaluated."""
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES,
                        help="evaluation output stride (default: the model's)")
    parser.add_argument("--scales", type=positive_scale, nargs="+", default=(1.0,), metavar="S",
                        help="eval scales, probabilities averaged (e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="also average left-right flips")
    parser.add_argument("--tile", nargs="+", action=TileAction, default="auto",
                        metavar=("auto|off|N|H", "W"),
                        help="one value or two: H W (or N for N x N) runs sliding-window "
                             "inference in tiles of that size (overlapping by a third, logits "
                             "averaged): bounded memory for any image size; off: whole images; "
                             "auto (default): whole images up to 1025x2049 pixels per scale, "
                             "513x513 tiles above")


def add_overlap_option(parser):
    """--overlap: how much of a tile its neighbour covers too."""
    parser.add_argument("--overlap", type=overlap_fraction, default=1 / 3, metavar="F",
                        help="with tiles: the fraction of a tile that its neighbour covers too, "
                             "in [0, 1) (default 1/3)")


def overlap_fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def add_max_pixels_option(parser, scaled=""):
    """--max-pixels: the decompression-bomb limit, read from the header when it tells."""
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"skip images with more pixels than this{scaled}, read from the file "
                             "header before decoding where it gives the size "
                             f"(default {DEFAULT_MAX_PIXELS:_}, 100 megapixels)")


def add_precision_option(parser, default):
    """--precision: what the network computes in; softmax, argmax and averaging stay float32."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="what the network computes in: bfloat16 (weights stay float32, "
                             "logits float32), float32, or auto: bfloat16 where it was measured "
                             "faster (TensorFlow on a CPU with AMX or AVX512_BF16; JAX on a GPU, "
                             f"for large enough calls), else float32 (default {default})")
