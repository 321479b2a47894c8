"""Options that several subcommands share, defined once."""

import argparse


def positive_scale(text):
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if scale <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text}")
    return scale


def add_eval_options(parser):
    """--output-stride, --scales and --flip: how a DeepLab model is evaluated."""
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="evaluation output stride (default: the model's)")
    parser.add_argument("--scales", type=positive_scale, nargs="+", default=(1.0,), metavar="S",
                        help="eval scales, probabilities averaged (e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="also average left-right flips")


def add_precision_option(parser, default):
    """--precision: what the network computes in; softmax, argmax and averaging stay float32."""
    from deeplab_xception.precision import PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="what the network computes in: bfloat16 (weights stay float32, "
                             "logits float32), float32, or auto: bfloat16 where the CPU has "
                             f"AMX or AVX512_BF16, else float32 (default {default})")
