"""What each inference precision costs in accuracy: mIoU and pixel agreement against float32.

Runs a DeepLab model over a dataset split in float32 (the reference),
bfloat16 (`Segmenter(precision="bfloat16")`) and int8 (the TFLite file that
`deeplab-xception export --quantize int8` writes, calibrated on the first
images of the training split), single scale and multi-scale + flip (int8:
single scale only, a TFLite file has one input size). Prints a table, writes JSON.

    python benchmarks/precision_accuracy.py --weights runs/segment_tiny/model.keras --data runs/synthetic_shapes
    python benchmarks/precision_accuracy.py --backbone xception_65 --data shapes_257   # random weights
"""

import argparse
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from deeplab_xception import build_model, load_model  # noqa: E402
from deeplab_xception.runtime.export import ExportOptions, export  # noqa: E402
from deeplab_xception.runtime.segmenter import Segmenter  # noqa: E402
from deeplab_xception.data.preprocessing import IGNORE_LABEL  # noqa: E402
from deeplab_xception.io import write_json  # noqa: E402
from deeplab_xception.segment.datasets import load_dataset  # noqa: E402
from deeplab_xception.segment.evaluate import summarize  # noqa: E402

MULTI_SCALE = (0.75, 1.0, 1.25)


def confusion(truth, predicted, num_classes):
    """Pixel counts [true, predicted], ignored labels left out."""
    valid = truth != IGNORE_LABEL
    index = truth[valid].astype(np.int64) * num_classes + predicted[valid]
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def int8_labels(model, images, calibration, directory):
    """Labels from the int8 TFLite export, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    options = ExportOptions("tflite", image_size=images.shape[1:3], align=model.output_stride)
    path = export(model, os.path.join(directory, "int8.tflite"), "tflite", options,
                  quantize="int8", calibration_images=calibration)
    interpreter = Interpreter(path)
    interpreter.allocate_tensors()
    feed = interpreter.get_input_details()[0]["index"]  # one H x W x 3 uint8 image
    fetch = next(d["index"] for d in interpreter.get_output_details() if len(d["shape"]) == 2)
    labels = []
    for image in images:
        interpreter.set_tensor(feed, image)
        interpreter.invoke()
        labels.append(interpreter.get_tensor(fetch))
    return np.stack(labels).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a trained DeepLab .keras (default: random weights)")
    parser.add_argument("--backbone", default="xception_65", help="for random weights")
    parser.add_argument("--num-classes", type=int, default=5, help="for random weights")
    parser.add_argument("--data", required=True, help="a generic-format dataset root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--calibration", type=int, default=8, help="training images to calibrate int8 on")
    parser.add_argument("--output", default="benchmarks/results/precision_accuracy.json")
    args = parser.parse_args()
    if args.weights:
        model = load_model(args.weights, kind="deeplab")
    else:
        model = build_model("deeplab", backbone=args.backbone, num_classes=args.num_classes)
    val = load_dataset("generic", args.data, args.split)
    images = np.stack([val.read(i)[0] for i in range(len(val))])
    truth = np.stack([val.read(i)[1] for i in range(len(val))])
    train = load_dataset("generic", args.data, "train")
    calibration = [example.image_path for example in train.examples[:args.calibration]]
    n = model.num_classes
    rows = []
    for scales, flip in (((1.0,), False), (MULTI_SCALE, True)):
        labels = {p: Segmenter(model, scales, flip, precision=p).labels(images)
                  for p in ("float32", "bfloat16")}
        if scales == (1.0,):
            with tempfile.TemporaryDirectory() as directory:
                labels["int8"] = int8_labels(model, images, calibration, directory)
        for precision, predicted in labels.items():
            report = summarize(confusion(truth, predicted, n), val.classes)
            rows.append({"precision": precision, "scales": list(scales), "flip": flip,
                         "mean_iou": report["mean_iou"],
                         "agreement_with_float32": float(np.mean(predicted == labels["float32"])),
                         "classes_predicted": int(np.count_nonzero(np.bincount(predicted.ravel())))})
            row = rows[-1]
            print(f"{','.join(f'{s:g}' for s in scales):>12} flip={flip!s:<5} {precision:>8}: "
                  f"mIoU {100 * row['mean_iou']:6.2f}  agreement {100 * row['agreement_with_float32']:7.3f}%"
                  f"  classes predicted {row['classes_predicted']}", flush=True)
    write_json(args.output, {"weights": args.weights or f"random {args.backbone}",
                             "data": os.path.basename(os.path.normpath(args.data)),
                             "images": len(val), "image_size": list(images.shape[1:3]),
                             "command": " ".join(["python"] + sys.argv), "rows": rows}, indent=1)


if __name__ == "__main__":
    main()
