"""Exports a DeepLabv3+ as a self-contained segmenter: uint8 image in, labels and probabilities out.

The exported graph holds the package's preprocessing (`preprocessing.py`) and the
align-corners upsampling, so a runtime needs nothing but the file, and every
batch norm folded into its conv, as the CLI's inference runs. Keras' own
exporters write each format. A SavedModel may compute in bfloat16 (TensorFlow
runs it on CPUs with AMX or AVX512_BF16); a TFLite file may be quantized to
int8 by the TFLite converter, calibrated on a few images.
"""

import importlib.util
import os
import shutil

import cv2
import keras
import numpy as np
from keras import ops

from deeplab_xception.errors import UserError
from deeplab_xception.inference import fold_batch_norms
from deeplab_xception.io import read_image
from deeplab_xception.precision import resolve_precision, with_precision
from deeplab_xception.preprocessing import preprocess

FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
# What a format needs beyond the core install, and the extra that installs it.
OPTIONAL = {"onnx": (("tf2onnx", "onnx"), "export")}


@keras.saving.register_keras_serializable(package="deeplab_xception")
class Preprocess(keras.layers.Layer):
    """The package's preprocessing, inside the exported graph."""

    def call(self, images):
        return preprocess(images)

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, dtype="float32")


@keras.saving.register_keras_serializable(package="deeplab_xception")
class ArgMax(keras.layers.Layer):
    """First index of the maximum, from min/where: TF's argmax lowering uses bit
    tricks that neither ONNX nor TFLite builtins support."""

    def call(self, probabilities):
        num_classes = ops.shape(probabilities)[-1]
        is_max = probabilities >= ops.max(probabilities, axis=-1, keepdims=True)
        index = ops.where(is_max, ops.arange(num_classes, dtype="int32"), num_classes)
        return ops.min(index, axis=-1)

    def compute_output_spec(self, probabilities):
        return keras.KerasTensor(probabilities.shape[:-1], dtype="int32")


def serving_model(model, image_size=None, precision="float32"):
    """uint8 images -> {"labels": int32 N x H x W, "probabilities": float32 N x H x W x C}.

    `image_size` fixes (H, W) and a batch of one (TFLite wants every dimension
    known); None keeps batch and size dynamic (SavedModel, ONNX). The network
    computes in `precision`, folded in float32 first; softmax and labels are float32.
    """
    height, width = image_size or (None, None)
    images = keras.Input((height, width, 3), batch_size=1 if image_size else None,
                         dtype="uint8", name="images")
    network = with_precision(fold_batch_norms(model), precision)
    logits = network(Preprocess(name="preprocess")(images))
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    labels = ArgMax(name="labels")(probabilities)
    return keras.Model(images, {"labels": labels, "probabilities": probabilities},
                       name="serving_segmenter")


def export_precision(fmt, precision="auto", quantize=None):
    """What the exported network computes in: "float32", "bfloat16" or "int8".

    bfloat16 only in a SavedModel: ONNX Runtime and TFLite have no bfloat16
    convolutions on CPU, so `auto` means float32 there.
    """
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: {quantize!r} is not int8")
    if quantize:
        if fmt != "tflite":
            raise UserError("--quantize int8: TFLite only (--format tflite)")
        if precision == "bfloat16":
            raise UserError("--precision bfloat16 and --quantize int8: choose one")
        return "int8"
    if fmt != "saved_model":
        if precision == "bfloat16":
            raise UserError(f"--precision bfloat16: {fmt} runtimes have no bfloat16 CPU kernels; "
                            "use --format saved_model or --precision float32")
        return "float32"
    return resolve_precision(precision)


def calibration_data(paths, image_size):
    """The representative dataset of int8 conversion: each image resized to `image_size`."""
    images = [read_image(path) for path in paths]

    def batches():
        for image in images:
            resized = cv2.resize(image, image_size[::-1], interpolation=cv2.INTER_AREA)
            yield [np.asarray(resized, np.uint8)[None]]
    return batches


def _int8_options(calibration_images, image_size):
    """TFLite converter settings for int8 kernels throughout (uint8 image in, float32 out)."""
    import tensorflow as tf

    if not calibration_images:
        raise UserError("--calibration-images: int8 quantization needs a few images to calibrate on")
    return {"optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": calibration_data(calibration_images, image_size),
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                              tf.lite.OpsSet.TFLITE_BUILTINS]}}


def export(model, path, fmt, image_size=None, precision="float32", quantize=None,
           calibration_images=()):
    """Writes `model` in format `fmt` ("saved_model", "tflite" or "onnx") at `path`, atomically.

    The network computes in export_precision(fmt, precision, quantize);
    `quantize="int8"` (TFLite) calibrates on `calibration_images` (paths).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {sorted(FORMATS)}")
    modules, extra = OPTIONAL.get(fmt, ((), None))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}; "
                        f"pip install 'deeplab-xception[{extra}]'")
    if fmt == "tflite" and image_size is None:
        raise UserError("--input-size: TFLite needs a fixed input size, e.g. --input-size 513 513")
    if image_size is not None and min(image_size) < 1:
        raise UserError(f"--input-size: sizes must be positive, got {image_size}")
    computed_in = export_precision(fmt, precision, quantize)
    if calibration_images and not quantize:
        raise UserError("--calibration-images: only for --quantize int8")
    options = _int8_options(calibration_images, image_size) if quantize else {}
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    _remove(tmp)
    try:
        serving = serving_model(model, image_size,
                                "bfloat16" if computed_in == "bfloat16" else "float32")
        signature = [keras.InputSpec(shape=serving.inputs[0].shape, dtype="uint8", name="images")]
        serving.export(tmp, format=FORMATS[fmt], input_signature=signature, verbose=False,
                       **options)
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)
