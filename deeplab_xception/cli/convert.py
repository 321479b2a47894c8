"""`deeplab-xception convert`: any weights the package reads, as the package's .keras model file."""

from deeplab_xception.cli.options import KINDS, OUTPUT_STRIDES
from deeplab_xception.errors import ArgumentError, UserError

RANDOM = "random:"  # SRC prefix: a model of random weights on the named backbone
# `load_model` argument: the flag that sets it.
FLAGS = {"kind": "--kind", "num_classes": "--num-classes", "output_stride": "--output-stride"}


def describe(model):
    """One line: what the model is, its classes, output stride and size."""
    from deeplab_xception.models.backbones import Backbone

    backbone = model if isinstance(model, Backbone) else model.backbone
    parts = [f"{model.__class__.__name__} on {backbone.name}"]
    if getattr(model, "num_classes", None):
        parts.append(f"{model.num_classes} classes")
    parts.append(f"output stride {backbone.output_stride}")
    parts.append(f"{model.count_params():,} parameters")
    return ", ".join(parts)


def check_destination(dst, overwrite):
    """Refuses, before any loading, a DST that is not a .keras name, is a folder or a link,
    or exists without --overwrite."""
    import os

    if not dst.endswith(".keras"):
        raise UserError(f"{dst}: the output must be a .keras file")
    if os.path.isdir(dst) or os.path.islink(dst):
        raise UserError(f"{dst}: is a {'link' if os.path.islink(dst) else 'folder'}; "
                        "the output must be a .keras file")
    if os.path.lexists(dst) and not overwrite:
        raise UserError(f"{dst}: already exists; give --overwrite to replace it")


def run(args):
    from deeplab_xception.io import atomic_path
    from deeplab_xception.models import build_model
    from deeplab_xception.weights import load_model

    check_destination(args.dst, args.overwrite)
    random = args.src[len(RANDOM):] if args.src.startswith(RANDOM) else None
    try:
        if random:
            model = build_model(args.kind or "deeplab", backbone=random,
                                num_classes=args.num_classes, output_stride=args.output_stride)
        else:
            model = load_model(args.src, kind=args.kind, num_classes=args.num_classes,
                               output_stride=args.output_stride)
    except ArgumentError as e:
        raise e.for_flags(FLAGS) from None
    except ValueError as e:  # build_model's, e.g. an output stride the backbone cannot reach
        raise UserError(str(e).replace("output_stride:", "--output-stride:")) from None
    with atomic_path(args.dst) as tmp:
        model.save(tmp)
    print(f"{args.dst}: {describe(model)}")


def register(subparsers):
    parser = subparsers.add_parser(
        "convert", help="weights to a .keras model file",
        description="Reads an official DeepLab / Xception checkpoint (prefix, directory, .tar.gz, "
                    "URL or zoo name), a Keras Xception .h5 or a .keras file, and writes DST.keras; "
                    "or, from random:BACKBONE, a model of random weights.")
    parser.add_argument("src", metavar="SRC",
                        help="the weights, or random:BACKBONE (e.g. random:xception_65) for a "
                             "model of random weights on that backbone variant")
    parser.add_argument("dst", metavar="DST")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST file")
    parser.add_argument("--kind", choices=KINDS,
                        help="model to build (default: what SRC holds, deeplab for random:; "
                             "deeplab on an ImageNet checkpoint or a classifier's .keras gives "
                             "its backbone a new head for fine-tuning)")
    parser.add_argument("--num-classes", type=int, help="classes (must agree with SRC's logits)")
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES,
                        help="backbone output stride (default 16 for deeplab, 32 otherwise)")
    parser.set_defaults(run=run)
