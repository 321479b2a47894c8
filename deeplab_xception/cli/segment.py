"""`deeplab-xception segment`: label maps, overlays and class shares for images of any size."""

import glob
import os
import sys

import numpy as np
from tqdm import tqdm

from deeplab_xception.cli.options import add_eval_options, add_precision_option
from deeplab_xception.deeplab import DeepLabV3Plus
from deeplab_xception.errors import UserError
from deeplab_xception.inference import Segmenter
from deeplab_xception.io import read_image, save_npy, write_image, write_json
from deeplab_xception.visualize import class_fractions, overlay, write_label_png
from deeplab_xception.weights import load_model

# Extensions taken from directories and glob patterns; files named one by one may have any.
IMAGE_EXTENSIONS = (".bmp", ".jp2", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm",
                    ".tif", ".tiff", ".webp")
WAITING_BATCHES = 4  # images held back to fill batches of their size, in batches
OUTPUT_SUFFIXES = {"labels": ".png", "overlay": ".overlay.png", "json": ".json",
                   "probabilities": ".npy"}


def find_images(inputs):
    """(image paths, problems) from files, directories and glob patterns, each path once."""
    found, problems = {}, []
    for spec in inputs:
        if os.path.isfile(spec):
            paths = [spec]
        elif os.path.isdir(spec):
            paths = _images_in(sorted(os.path.join(spec, name) for name in os.listdir(spec)))
            if not paths:
                problems.append(f"{spec}: directory holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        elif glob.has_magic(spec):
            paths = _images_in(sorted(glob.glob(spec, recursive=True)))
            if not paths:
                problems.append(f"{spec}: no image file matches")
        else:
            paths = []
            problems.append(f"{spec}: no such file")
        for path in paths:
            found.setdefault(os.path.realpath(path), path)
    return list(found.values()), problems


def _images_in(paths):
    return [p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)]


def plan_outputs(images, output_dir, kinds):
    """{image: {kind: output path}}; outputs may overwrite neither each other nor an input."""
    inputs = {os.path.realpath(path): path for path in images}
    owners, plans = {}, {}
    for path in images:
        stem = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0])
        plan = {kind: stem + OUTPUT_SUFFIXES[kind] for kind in kinds}
        for output in plan.values():
            real = os.path.realpath(output)
            if real in inputs:
                raise UserError(f"{output}: would overwrite the input image {inputs[real]}; "
                                "choose another --output-dir")
            if owners.setdefault(real, path) != path:
                raise UserError(f"{path}: same name as {owners[real]}; "
                                "their outputs would overwrite each other")
        plans[path] = plan
    return plans


def load_segmentation_model(weights, output_stride=None):
    model = load_model(weights, output_stride=output_stride)
    if not isinstance(model, DeepLabV3Plus):
        raise UserError(f"{weights}: holds a {model.__class__.__name__}, not a segmentation model")
    return model


def class_table(dataset, classes_file, num_classes, weights):
    """(class names, palette) from --dataset or --classes; by default the dataset with
    `num_classes` classes, else numbered classes in VOC's color map."""
    from segment.datasets import FORMATS
    from segment.datasets.base import bit_palette
    from segment.datasets.generic import read_class_list

    if classes_file:
        names, palette = read_class_list(classes_file)
        source = classes_file
    else:
        if dataset is None:
            dataset = next((name for name, module in named_datasets(FORMATS).items()
                            if len(module.CLASSES) == num_classes), None)
        if dataset is None:
            return [f"class {i}" for i in range(num_classes)], bit_palette(num_classes)
        names, palette = FORMATS[dataset].CLASSES, FORMATS[dataset].PALETTE
        source = f"--dataset {dataset}"
    if len(names) != num_classes:
        raise UserError(f"{source}: has {len(names)} classes but {weights} predicts {num_classes}")
    return list(names), np.asarray(palette, np.uint8)


def named_datasets(formats):
    """The dataset formats with a fixed class list."""
    return {name: module for name, module in formats.items() if hasattr(module, "CLASSES")}


def read_batches(paths, batch_size, failed):
    """[(path, image)] lists of one image size, at most `batch_size` long; a batch goes when
    full, or, the largest, when too many images wait. Unreadable files go to `failed(message)`."""
    pending = {}
    for path in paths:
        try:
            image = read_image(path)
        except UserError as e:
            failed(str(e))
            continue
        group = pending.setdefault(image.shape[:2], [])
        group.append((path, image))
        waiting = sum(map(len, pending.values()))
        if len(group) == batch_size or waiting > WAITING_BATCHES * batch_size:
            yield pending.pop(max(pending, key=lambda size: len(pending[size])))
    yield from pending.values()


def write_outputs(plan, path, image, probabilities, names, palette, alpha):
    labels = probabilities.argmax(axis=-1).astype(np.uint8)
    write_label_png(plan["labels"], labels, palette)
    if "overlay" in plan:
        write_image(plan["overlay"], overlay(image, labels, palette, names, alpha))
    if "json" in plan:
        classes = [{"index": c, "name": names[c], "fraction": f}
                   for c, f in class_fractions(labels, len(names))]
        write_json(plan["json"], {"image": path, "height": labels.shape[0], "width": labels.shape[1],
                                  "labels": plan["labels"], "classes": classes})
    if "probabilities" in plan:
        save_npy(plan["probabilities"], probabilities.astype(np.float32))


def report(message):
    tqdm.write(f"deeplab-xception segment: error: {message}", file=sys.stderr)


def run(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha: must be between 0 and 1, got {args.alpha:g}")
    if args.dataset and args.classes:
        raise UserError("--dataset and --classes: give one of them")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UserError(f"--output-dir: {args.output_dir} is a file, not a directory")
    images, failed = find_images(args.images)
    for problem in failed:
        report(problem)
    if not images:
        return 2
    wanted = {"overlay": args.overlay, "json": args.json, "probabilities": args.save_probabilities}
    kinds = ["labels"] + [kind for kind, on in wanted.items() if on]
    plans = plan_outputs(images, args.output_dir, kinds)
    model = load_segmentation_model(args.weights, args.output_stride)
    if model.num_classes > 256:
        raise UserError(f"{args.weights}: {model.num_classes} classes do not fit uint8 label PNGs")
    names, palette = class_table(args.dataset, args.classes, model.num_classes, args.weights)
    segmenter = Segmenter(model, scales=args.scales, flip=args.flip, precision=args.precision)
    done = 0
    with tqdm(total=len(images), unit="image", disable=len(images) < 2 or None) as progress:
        def unreadable(message):
            failed.append(message)
            report(message)
            progress.update()

        for batch in read_batches(images, args.batch_size, unreadable):
            probabilities = segmenter.probabilities(np.stack([image for _, image in batch]))
            for (path, image), p in zip(batch, probabilities):
                write_outputs(plans[path], path, image, p, names, palette, args.alpha)
            done += len(batch)
            progress.update(len(batch))
    print(f"{done} image{'s' * (done != 1)} segmented into {args.output_dir} "
          f"(computed in {segmenter.precision})" + (f"; {len(failed)} failed" if failed else ""))
    return 2 if not done else 1 if failed else 0


def register(subparsers):
    from segment.datasets import FORMATS

    parser = subparsers.add_parser(
        "segment", help="label maps, overlays and class shares for images",
        description="Writes OUTPUT_DIR/<name>.png per image: the class index of every pixel as an "
                    "indexed PNG in the dataset's colors. Unreadable inputs are reported and "
                    "skipped (exit status 1); exit status 2 when no image was segmented.")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (any format OpenCV reads, any size), directories or "
                             "glob patterns such as 'photos/**/*.jpg'")
    parser.add_argument("--weights", required=True,
                        help=".keras model, official checkpoint (prefix, directory, .tar.gz, URL) or zoo name")
    parser.add_argument("--output-dir", required=True, help="where the outputs go")
    parser.add_argument("--dataset", choices=sorted(named_datasets(FORMATS)),
                        help="class names and colors (default: the dataset with the model's "
                             "number of classes, else numbered classes)")
    parser.add_argument("--classes", metavar="FILE",
                        help="class names and colors from a class list ('name r g b' a line)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <name>.overlay.png: class colors over the photo, "
                             "with a legend")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.add_argument("--json", action="store_true",
                        help="also write <name>.json: the share of pixels of each class present")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <name>.npy: class probabilities, float32 H x W x classes")
    add_eval_options(parser)
    add_precision_option(parser, "auto")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="images of one size run together, up to this many (default 1)")
    parser.set_defaults(run=run)
