"""`deeplab-xception budget`: multiply-adds (and time) per eval output stride."""

import json
import sys

from deeplab_xception.cli.options import KINDS, add_precision_option
from deeplab_xception.errors import ArgumentError, UserError

# `budget` argument: the flag that sets it.
FLAGS = {"kind": "--kind", "backbone": "--backbone", "input_size": "--input-size",
         "num_classes": "--num-classes", "output_strides": "--output-stride", "scales": "--scales",
         "repeats": "--measure"}

HELP = """\
Multiply-adds of one batch-1 pass, counted on the built model (conv, depthwise,
separable and dense layers; batch norm, ReLU, pooling, resize, padding, concat
and add count zero). "multiply-adds" follows the DeepLabv3+ paper (TF profiler
float ops / 2): a conv with dilation rate r counts each spatial output size o
as ceil(o / r) * r, the padding of TF's space-to-batch; "exact" counts the true
output sizes. Multi-scale evaluation runs the same model on each image resized
to (H - 1) * s + 1 x (W - 1) * s + 1 and sums the counts; --flip doubles them.
"""


def _yes_no(value):
    return "-" if value is None else ("yes" if value else "no")


def _unit(rows):
    """Billions as in the paper, millions for models too small to show in billions."""
    return ("B", 1e9) if max(row.multiply_adds for row in rows) >= 10e9 else ("M", 1e6)


def format_table(rows, breakdown=False):
    """Rows as aligned text, one line per eval output stride."""
    unit, size = _unit(rows)
    header = ["eval OS", "decoder", "separable", "scales", "flip", "input",
              f"multiply-adds ({unit})", f"exact ({unit})", "parameters (M)"]
    measured = all(row.seconds is not None for row in rows)
    if measured:
        header += ["seconds/image", "images/s", "precision"]
    blocks = list(dict.fromkeys(b for row in rows for b in row.breakdown)) if breakdown else []
    header += [f"{b} ({unit})" for b in blocks]
    lines = []
    for row in rows:
        cells = [str(row.eval_output_stride), _yes_no(row.decoder), _yes_no(row.separable),
                 ",".join(f"{s:g}" for s in row.scales), _yes_no(row.flip),
                 f"{row.input_size[0]}x{row.input_size[1]}",
                 f"{row.multiply_adds / size:.2f}", f"{row.multiply_adds_exact / size:.2f}",
                 f"{row.parameters / 1e6:.2f}"]
        if measured:
            cells += [f"{row.seconds:.3f}", f"{row.images_per_second:.2f}", row.precision]
        cells += [f"{row.breakdown.get(b, {}).get('multiply_adds', 0) / size:.2f}" for b in blocks]
        lines.append(cells)
    widths = [max(len(c) for c in column) for column in zip(header, *lines)]
    first = rows[0]
    title = f"{first.kind} on {first.backbone}" + (
        f", {first.num_classes} classes" if first.num_classes else "")
    return "\n".join([title] + ["  ".join(c.rjust(w) for c, w in zip(cells, widths))
                                for cells in [header] + lines])


def run(args):
    from deeplab_xception.runtime.budget import budget
    from deeplab_xception.runtime.budget_plot import plot_budget, plot_format

    if args.kind != "deeplab" and not (args.decoder and args.separable):
        raise UserError("--no-decoder and --no-separable apply to --kind deeplab only")
    if args.plot:
        plot_format(args.plot)
    try:
        rows = budget(kind=args.kind, backbone=args.backbone, input_size=tuple(args.input_size),
                      num_classes=args.num_classes, output_strides=args.output_stride,
                      decoder=args.decoder, separable=args.separable, scales=args.scales,
                      flip=args.flip, repeats=args.measure, precision=args.precision,
                      report=lambda message: print(message, file=sys.stderr, flush=True))
    except ArgumentError as e:
        raise e.for_flags(FLAGS) from None
    if args.plot:
        plot_budget(rows, args.plot)
    if args.format == "json":
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        print(format_table(rows, breakdown=args.breakdown))


def register(subparsers):
    parser = subparsers.add_parser("budget", help="multiply-adds per eval output stride",
                                   description=HELP)
    parser.add_argument("--kind", default="deeplab", choices=KINDS,
                        help="DeepLabv3+ (default), ImageNet classifier or bare backbone")
    parser.add_argument("--backbone", default="xception_65", help="backbone variant (default xception_65)")
    parser.add_argument("--input-size", type=int, nargs=2, default=(513, 513), metavar=("H", "W"),
                        help="image size at scale 1 (default 513 513)")
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="classes (default 21 for deeplab, 1001 or 1000 for classifier)")
    parser.add_argument("--output-stride", type=int, nargs="+", metavar="OS",
                        help="eval output strides, one row each "
                             "(default 8 16 32, those the backbone reaches)")
    parser.add_argument("--no-decoder", dest="decoder", action="store_false",
                        help="DeepLabv3 head without the stride-4 decoder")
    parser.add_argument("--no-separable", dest="separable", action="store_false",
                        help="dense 3x3 convs in ASPP and decoder")
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0,), metavar="S",
                        help="eval scales, counts summed (e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="add the flipped pass (doubles the count)")
    parser.add_argument("--breakdown", action="store_true",
                        help="per section: entry, middle and exit flow, ASPP, decoder, logits")
    parser.add_argument("--measure", type=int, nargs="?", const=3, metavar="REPEATS",
                        help="also time the model on this machine: warm-up, then the median of REPEATS "
                             "runs (default 3) per scale, summed over scales, doubled by --flip")
    add_precision_option(parser, "auto")
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="aligned table (default) or a JSON list of rows")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart per eval output stride")
    parser.set_defaults(run=run)
