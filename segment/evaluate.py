"""mIoU and per-class IoU of a DeepLabV3Plus on a dataset split, at the original image sizes."""

import os

import keras
import matplotlib
import numpy as np
from tqdm import tqdm

from deeplab_xception.errors import UserError
from deeplab_xception.inference import Segmenter
from deeplab_xception.preprocessing import IGNORE_LABEL
from deeplab_xception.io import atomic_path, write_json
from deeplab_xception.models import with_output_stride
from deeplab_xception.precision import resolve_precision

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def check_classes(model, dataset):
    if model.num_classes != dataset.num_classes:
        raise UserError(f"{dataset.source}: the class list has {dataset.num_classes} classes but "
                        f"the model predicts {model.num_classes}")


def confusion_matrix(model, dataset, scales=(1.0,), flip=False, output_stride=None, tile="auto",
                     precision="float32"):
    """Pixel counts [true class, predicted class] over the split, 255 labels left out."""
    check_classes(model, dataset)
    if output_stride is not None and output_stride != model.output_stride:
        model = with_output_stride(model, output_stride)
    segmenter = Segmenter(model, scales=scales, flip=flip, tile=tile, precision=precision)
    metric = keras.metrics.MeanIoU(dataset.num_classes, sparse_y_true=True, sparse_y_pred=True,
                                   dtype="float64")
    for index in tqdm(range(len(dataset)), desc="evaluating", unit="image"):
        image, label = dataset.read(index)
        predicted = segmenter.labels(image[None])[0]
        valid = label != IGNORE_LABEL
        metric.update_state(np.where(valid, label, 0), predicted, sample_weight=valid)
    return keras.ops.convert_to_numpy(metric.total_cm).astype(np.int64)


def summarize(confusion, classes, settings=None):
    """The report: mIoU over classes that occur (in labels or predictions), per-class IoU."""
    true_positives = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    present = union > 0
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
             tile="auto", precision="float32"):
    """The report for `dataset`; also written under `output_dir` when given. `tile`: whole-image
    or tiled inference, as `Segmenter` takes it. float32 by default, so the mIoU is the model's
    own; "bfloat16" or "auto" measure those paths."""
    precision = resolve_precision(precision)
    confusion = confusion_matrix(model, dataset, scales, flip, output_stride, tile, precision)
    settings = {"output_stride": output_stride or model.output_stride,
                "scales": list(scales), "flip": flip, "num_images": len(dataset),
                "precision": precision}
    report = summarize(confusion, dataset.classes, settings)
    if output_dir:
        write_report(output_dir, report, confusion, dataset.classes)
    return report, confusion
