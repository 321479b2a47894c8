"""mIoU and per-class IoU of a DeepLabV3Plus on a dataset split, as the official eval measures it.

With an eval crop each image is padded bottom/right to the crop (mean pixel;
its label with the ignore value), the network runs on the padded image, so
image pooling averages over the padded map, and the prediction is cropped
back. Without one (or for an image larger than the crop) each image runs at
its own size.
"""

import os

import matplotlib
import numpy as np
from tqdm import tqdm

from deeplab_xception.backend import import_tensorflow
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.data.preprocessing import IGNORE_LABEL, pad_to_crop_array
from deeplab_xception.io import atomic_path, write_json
from deeplab_xception.models import with_output_stride
from deeplab_xception.runtime.precision import resolve_precision
from deeplab_xception.segment import pipeline

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def check_classes(model, dataset):
    if model.num_classes != dataset.num_classes:
        raise UserError(f"{dataset.source}: the class list has {dataset.num_classes} classes but "
                        f"the model predicts {model.num_classes}")


def predict(segmenter, image, eval_crop_size=None):
    """Label map of one uint8 image: on the padded crop when it fits, else at its own size."""
    height, width = image.shape[:2]
    if eval_crop_size and height <= eval_crop_size[0] and width <= eval_crop_size[1]:
        padded, _ = pad_to_crop_array(image, None, eval_crop_size)
        return segmenter.labels(padded[None])[0, :height, :width]
    return segmenter.labels(image[None])[0]


def confusion_matrix(model, dataset, scales=(1.0,), flip=False, output_stride=None, tile="auto",
                     precision="float32", eval_crop_size=None):
    """(pixel counts [true class, predicted class] over the split, 255 labels left out,
    number of images larger than `eval_crop_size` that ran at their own size)."""
    check_classes(model, dataset)
    if output_stride is not None and output_stride != model.output_stride:
        model = with_output_stride(model, output_stride)
    segmenter = Segmenter(model, scales=scales, flip=flip, tile=tile, precision=precision)
    classes = dataset.num_classes
    confusion = np.zeros((classes, classes), np.int64)  # in numpy: JAX has no 64-bit counts
    over_crop = 0
    import_tensorflow()  # tf.data reads the images: under JAX, with TensorFlow's GPUs hidden
    examples = pipeline.decoded_examples(dataset).prefetch(2)
    for image, label in tqdm(examples.as_numpy_iterator(), total=len(dataset), desc="evaluating",
                             unit="image", disable=None):  # no bar when stderr is no terminal
        label = label[..., 0]
        if eval_crop_size and (label.shape[0] > eval_crop_size[0]
                               or label.shape[1] > eval_crop_size[1]):
            if not over_crop:
                tqdm.write(f"evaluate: an image of {label.shape[1]}x{label.shape[0]} is larger "
                           f"than the eval crop {eval_crop_size[1]}x{eval_crop_size[0]}; such "
                           "images run at their own size")
            over_crop += 1
        predicted = predict(segmenter, image, eval_crop_size)
        valid = label != IGNORE_LABEL
        pairs = label[valid].astype(np.int64) * classes + predicted[valid]
        confusion += np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)
    return confusion, over_crop


def summarize(confusion, classes, settings=None, ignored_classes=()):
    """The report: mIoU over classes that occur (in labels or predictions), per-class IoU;
    `ignored_classes` (ADE20K's "other") have no IoU and stay out of the mean."""
    true_positives = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    present = union > 0
    present[list(ignored_classes)] = False
    iou = np.where(present, true_positives / np.maximum(union, 1), np.nan)
    return {
        **(settings or {}),
        "mean_iou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positives.sum() / max(confusion.sum(), 1)),
        "num_pixels": int(confusion.sum()),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(classes, iou)},
    }


def format_table(report):
    width = max(len(name) for name in report["per_class_iou"])
    lines = [f"{'class':<{width}}  IoU (%)"]
    for name, value in report["per_class_iou"].items():
        lines.append(f"{name:<{width}}  {'-' if value is None else f'{100 * value:6.2f}'}")
    lines.append(f"{'mean':<{width}}  {100 * report['mean_iou']:6.2f}")
    return "\n".join(lines) + "\n"


def plot_confusion(path, confusion, classes):
    """Row-normalized confusion matrix (each true class sums to 1) as a PNG."""
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    side = max(4.0, 0.25 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(side, side))
    shown = axes.imshow(rows, cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
    axes.set_yticks(range(len(classes)), classes, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.colorbar(shown, ax=axes, fraction=0.046)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def write_report(output_dir, report, confusion, classes):
    """report.json, per_class_iou.txt and confusion_matrix.png, each written atomically."""
    write_json(os.path.join(output_dir, "report.json"),
               {**report, "confusion_matrix": confusion.tolist()})
    with atomic_path(os.path.join(output_dir, "per_class_iou.txt")) as tmp:
        with open(tmp, "w") as f:
            f.write(format_table(report))
    plot_confusion(os.path.join(output_dir, "confusion_matrix.png"), confusion, classes)


def evaluate(model, dataset, scales=(1.0,), flip=False, output_stride=None, output_dir=None,
             tile="auto", precision="float32", eval_crop_size=None):
    """The report for `dataset`; also written under `output_dir` when given. `tile`: whole-image
    or tiled inference, as `Segmenter` takes it. float32 by default, so the mIoU is the model's
    own; "bfloat16" or "auto" measure those paths. `eval_crop_size` (height, width): the
    official protocol (see the module docstring); None runs every image at its own size.
    """
    precision = resolve_precision(precision)
    confusion, over_crop = confusion_matrix(model, dataset, scales, flip, output_stride, tile,
                                            precision, eval_crop_size)
    settings = {"output_stride": output_stride or model.output_stride,
                "scales": list(scales), "flip": flip, "num_images": len(dataset),
                "precision": precision,
                "eval_crop_size": list(eval_crop_size) if eval_crop_size else None,
                "images_over_crop": over_crop}
    report = summarize(confusion, dataset.classes, settings, dataset.ignored_classes)
    if output_dir:
        write_report(output_dir, report, confusion, dataset.classes)
    return report, confusion
