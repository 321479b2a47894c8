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
