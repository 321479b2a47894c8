"""`deeplab-xception classify`: top-k ImageNet classes of images."""

import json

import numpy as np
from keras import ops

from deeplab_xception.classifier import XceptionClassifier
from deeplab_xception.errors import UserError
from deeplab_xception.io import read_image
from deeplab_xception.preprocessing import (
    CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE, classifier_eval_image)
from deeplab_xception.weights import load_model


def load_batch(paths):
    """Images as the classifiers are evaluated (`preprocessing.classifier_eval_image`)."""
    return np.stack([ops.convert_to_numpy(classifier_eval_image(read_image(p))) for p in paths])


def top_k(probabilities, k):
    """[(class, probability)] of the k most probable classes, most probable first."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(int(c), float(probabilities[c])) for c in order]


def run(args):
    if args.top_k < 1:
        raise UserError(f"--top-k: must be at least 1, got {args.top_k}")
    images = load_batch(args.images)
    model = load_model(args.weights)
    if not isinstance(model, XceptionClassifier):
        raise UserError(f"{args.weights}: holds a {model.__class__.__name__}, not an image classifier")
    outputs = model.predict(images, batch_size=8, verbose=0)
    probabilities = ops.convert_to_numpy(ops.softmax(outputs) if model.activation is None else outputs)
    results = [{"image": path, "top_k": [{"class": c, "probability": p} for c, p in top_k(row, args.top_k)]}
               for path, row in zip(args.images, probabilities)]
    if args.format == "json":
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(result["image"])
        for entry in result["top_k"]:
            print(f"  {entry['probability']:.4f}  class {entry['class']}")


def register(subparsers):
    parser = subparsers.add_parser(
        "classify", help="top-k ImageNet classes of images",
        description=f"Crops the central {CENTRAL_FRACTION:.1%} of each image, resizes it to "
                    f"{CLASSIFIER_IMAGE_SIZE}x{CLASSIFIER_IMAGE_SIZE} and prints the top-k classes "
                    "of an Xception classifier. Official modified-Xception classifiers have 1001 classes, 0 being "
                    "background; Keras' Xception has the 1000 ImageNet classes.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="any image OpenCV reads")
    parser.add_argument("--weights", required=True,
                        help=".keras classifier, Keras Xception .h5, or an ImageNet checkpoint with logits")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print per image (default 5)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)
