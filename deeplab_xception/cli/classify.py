"""`deeplab-xception classify`: top-k ImageNet classes of images."""

import json
import sys

from deeplab_xception.cli.options import DEFAULT_MAX_PIXELS, add_max_pixels_option, flag_message
from deeplab_xception.errors import UserError

BATCH_SIZE = 8  # images read, cropped and classified together; only these are held
FLAGS = {"max_pixels": "--max-pixels"}


def top_k(probabilities, k):
    """[(class, probability)] of the k most probable classes, most probable first."""
    import numpy as np

    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(c), float(probabilities[c])) for c in order]


def imagenet_names(num_classes):
    """Class names by index for 1000 (ImageNet) or 1001 (background at 0) classes, else None."""
    from importlib import resources

    if num_classes not in (1000, 1001):
        return None
    lines = resources.files("deeplab_xception").joinpath("data/imagenet_classes.txt").read_text()
    names = [line.split("\t")[1].split(",")[0] for line in lines.splitlines()]
    return names if num_classes == 1000 else ["background"] + names


def crops(paths, size, central_fraction, failed, max_pixels=DEFAULT_MAX_PIXELS):
    """Batches of (paths, crops): each image's evaluation crop, as the pretraining
    evaluator takes it (`preprocessing.classifier_eval_array`). Unreadable files, and
    files of more than `max_pixels`, go to `failed(message)`."""
    import numpy as np

    from deeplab_xception.runtime.image_files import read_within_limit
    from deeplab_xception.data.preprocessing import classifier_eval_array

    batch = []
    for path in paths:
        try:
            image = read_within_limit(path, max_pixels=max_pixels)
            batch.append((path, classifier_eval_array(image, size, central_fraction)))
        except UserError as e:
            failed(flag_message(e, FLAGS))
            continue
        if len(batch) == BATCH_SIZE:
            yield [p for p, _ in batch], np.stack([c for _, c in batch])
            batch = []
    if batch:
        yield [p for p, _ in batch], np.stack([c for _, c in batch])


def report(message):
    print(f"deeplab-xception classify: error: {message}", file=sys.stderr)


def run(args):
    import numpy as np

    from deeplab_xception.models.classifier import XceptionClassifier
    from deeplab_xception.runtime.compiled import compiled_call
    from deeplab_xception.data.preprocessing import CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE
    from deeplab_xception.runtime.tiling import softmax
    from deeplab_xception.weights import load_model

    if args.top_k < 1:
        raise UserError(f"--top-k: must be at least 1, got {args.top_k}")
    size = args.image_size or CLASSIFIER_IMAGE_SIZE
    fraction = CENTRAL_FRACTION if args.central_fraction is None else args.central_fraction
    if size < 1:
        raise UserError(f"--image-size: must be positive, got {size}")
    if not 0 < fraction <= 1:
        raise UserError(f"--central-fraction: must be in (0, 1], got {fraction:g}")
    model = load_model(args.weights)
    if not isinstance(model, XceptionClassifier):
        raise UserError(f"{args.weights}: holds a {model.__class__.__name__}, not an image classifier")
    names = imagenet_names(model.num_classes)
    classify = compiled_call(model)
    failed, results = [], []

    def unreadable(message):
        failed.append(message)
        report(message)

    for paths, images in crops(args.images, size, fraction, unreadable, args.max_pixels):
        outputs = np.asarray(classify(images))
        probabilities = softmax(outputs) if model.activation is None else outputs
        for path, row in zip(paths, probabilities):
            result = {"image": path, "top_k": [
                {"class": c, "probability": p, **({"name": names[c]} if names else {})}
                for c, p in top_k(row, args.top_k)]}
            if args.format == "json":
                results.append(result)
            else:
                print_result(result)
    if args.format == "json":
        print(json.dumps(results, indent=2))
    done = len(args.images) - len(failed)
    return 2 if not done else 1 if failed else 0


def print_result(result):
    print(result["image"], flush=True)
    for entry in result["top_k"]:
        name = entry.get("name", f"class {entry['class']}")
        print(f"  {entry['probability']:.4f}  {name}" + (f" ({entry['class']})" if "name" in entry else ""))


def register(subparsers):
    parser = subparsers.add_parser(
        "classify", help="top-k ImageNet classes of images",
        description="Takes the central crop of each image that the pretraining evaluator takes, "
                    "resized to 299x299, and prints the top-k classes of an Xception classifier, "
                    "with ImageNet class names for 1000- and 1001-class models (official "
                    "modified-Xception classifiers have 1001 classes, 0 being background; Keras' "
                    "Xception has the 1000 ImageNet classes). Unreadable inputs are reported "
                    "and skipped (exit status 1).")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="any image OpenCV reads")
    parser.add_argument("--weights", required=True,
                        help=".keras classifier, Keras Xception .h5, or an ImageNet checkpoint with logits")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--image-size", type=int, metavar="N",
                        help="the model's input size (default: pretraining's, 299)")
    parser.add_argument("--central-fraction", type=float, metavar="F",
                        help="share of each side kept by the central crop "
                             "(default: the pretraining evaluator's, 0.875)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    add_max_pixels_option(parser)
    parser.set_defaults(run=run)
