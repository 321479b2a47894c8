"""`deeplab-xception segment`: a label map (and optionally class probabilities) per image."""

import os

from deeplab_xception.deeplab import DeepLabV3Plus
from deeplab_xception.errors import UserError
from deeplab_xception.inference import Segmenter
from deeplab_xception.io import read_image, save_npy, write_image
from deeplab_xception.weights import load_model


def output_stems(images, output_dir):
    """`output_dir/<image name without extension>` per image; two inputs may not share one."""
    stems = {}
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in stems:
            raise UserError(f"{path}: same name as {stems[stem]}; their outputs would overwrite each other")
        stems[stem] = path
    return [os.path.join(output_dir, stem) for stem in stems]


def load_segmentation_model(weights, output_stride=None):
    model = load_model(weights, output_stride=output_stride)
    if not isinstance(model, DeepLabV3Plus):
        raise UserError(f"{weights}: holds a {model.__class__.__name__}, not a segmentation model")
    return model


def run(args):
    if any(s <= 0 for s in args.scales):
        raise UserError(f"--scales: must be positive, got {' '.join(f'{s:g}' for s in args.scales)}")
    for path in args.images:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    outputs = output_stems(args.images, args.output_dir)
    model = load_segmentation_model(args.weights, args.output_stride)
    if model.num_classes > 256:
        raise UserError(f"{args.weights}: {model.num_classes} classes do not fit uint8 label PNGs")
    segmenter = Segmenter(model, scales=args.scales, flip=args.flip)
    for path, stem in zip(args.images, outputs):
        probabilities = segmenter.probabilities(read_image(path)[None])[0]
        write_image(stem + ".png", probabilities.argmax(axis=-1).astype("uint8"))
        if args.save_probabilities:
            save_npy(stem + ".npy", probabilities.astype("float32"))
        print(f"{path} -> {stem}.png")


def register(subparsers):
    parser = subparsers.add_parser(
        "segment", help="label maps for images",
        description="Writes OUTPUT_DIR/<name>.png with the class index of every pixel (uint8), "
                    "and with --save-probabilities OUTPUT_DIR/<name>.npy (float32, H x W x classes).")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="any image OpenCV reads, any size")
    parser.add_argument("--weights", required=True,
                        help=".keras model, official checkpoint (prefix, directory, .tar.gz, URL) or zoo name")
    parser.add_argument("--output-stride", type=int, choices=(8, 16, 32),
                        help="backbone output stride (default: the model's)")
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0,), metavar="S",
                        help="eval scales, probabilities averaged (e.g. 0.5 0.75 1 1.25 1.5 1.75)")
    parser.add_argument("--flip", action="store_true", help="also average the left-right flipped pass")
    parser.add_argument("--output-dir", required=True, help="where the label maps go")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write the class probabilities as .npy")
    parser.set_defaults(run=run)
