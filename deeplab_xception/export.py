"""Exports a DeepLabv3+ as a self-contained segmenter: uint8 image in, labels and probabilities out.

The exported graph holds the package's preprocessing (x * 2/255 - 1) and the
align-corners upsampling, so a runtime needs nothing but the file, and every
batch norm folded into its conv, as the CLI's inference runs. Keras' own
exporters write each format.
"""

import importlib.util
import os
import shutil
import tempfile

import keras
from keras import ops

from deeplab_xception.errors import UserError
from deeplab_xception.inference import fold_batch_norms

FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}  # Keras' LiteRT exporter insists on its own


@keras.saving.register_keras_serializable(package="deeplab_xception")
class Preprocess(keras.layers.Layer):
    """uint8 RGB to [-1, 1], inside the exported graph."""

    def call(self, images):
        return ops.cast(images, "float32") * (2.0 / 255.0) - 1.0

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


def serving_model(model, image_size=None):
    """uint8 images -> {"labels": int32 N x H x W, "probabilities": float32 N x H x W x C}.

    `image_size` fixes (H, W) and a batch of one (TFLite wants every dimension
    known); None keeps batch and size dynamic (SavedModel, ONNX).
    """
    height, width = image_size or (None, None)
    images = keras.Input((height, width, 3), batch_size=1 if image_size else None,
                         dtype="uint8", name="images")
    logits = fold_batch_norms(model)(Preprocess(name="preprocess")(images))
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    labels = ArgMax(name="labels")(probabilities)
    return keras.Model(images, {"labels": labels, "probabilities": probabilities},
                       name="serving_segmenter")


def export(model, path, fmt, image_size=None, overwrite=False):
    """Writes `model` in format `fmt` ("saved_model", "tflite" or "onnx") at `path`.

    The export goes to a temporary name beside `path` and is renamed into
    place, so a failure leaves no half-written output. An existing `path` is
    refused unless `overwrite`, and even then only a previous export of the
    same format is replaced (see `check_target`).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format: {fmt!r} is not one of {sorted(FORMATS)}")
    if fmt == "tflite" and image_size is None:
        raise UserError("--input-size: TFLite needs a fixed input size, e.g. --input-size 513 513")
    if image_size is not None and min(image_size) < 1:
        raise UserError(f"--input-size: sizes must be positive, got {image_size}")
    path = os.fspath(path)
    check_target(path, fmt, overwrite)
    require_modules(fmt)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    try:
        written = os.path.join(staging, "export" + SUFFIXES.get(fmt, ""))
        serving = serving_model(model, image_size)
        signature = [keras.InputSpec(shape=serving.inputs[0].shape, dtype="uint8", name="images")]
        serving.export(written, format=FORMATS[fmt], input_signature=signature, verbose=False)
        if os.path.lexists(path):  # a previous export, checked above: swap it out, then drop it
            os.replace(path, os.path.join(staging, "previous"))
        os.replace(written, path)
    finally:
        shutil.rmtree(staging)
    return path


# What a SavedModel folder holds; a folder with anything else is not a previous export.
SAVED_MODEL_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets"}
# How each file format is recognized, beside its extension: a test of its first bytes.
FILE_SIGNATURES = {
    "onnx": lambda head: head[:1] == b"\x08",  # ModelProto starts with ir_version
    "tflite": lambda head: head[4:8] == b"TFL3",  # the flatbuffer's identifier
}
EXTRA_MODULES = {"onnx": ("tf2onnx", "onnx")}


def check_target(path, fmt, overwrite):
    """Raises UserError unless `path` is free, or `overwrite` and `path` is a previous
    `fmt` export: never a folder that holds anything else, the working folder, one above
    it, the home folder or the root."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise UserError(f"--output: {path} already exists; give --overwrite to replace "
                        f"a previous {fmt} export")
    real = os.path.realpath(path)
    protected = {os.path.realpath(p) for p in (os.sep, os.path.expanduser("~"))}
    cwd = os.path.realpath(os.getcwd())
    if real in protected or cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise UserError(f"--output: {path} is the working, home or root folder; "
                        "choose a new path")
    if not is_previous_export(path, fmt):
        raise UserError(f"--output: {path} is not a previous {fmt} export; "
                        "--overwrite replaces nothing else")


def is_previous_export(path, fmt):
    """Whether `path` holds a `fmt` export and nothing else, recognized by its contents."""
    if os.path.islink(path):
        return False
    if fmt == "saved_model":
        return (os.path.isdir(path) and "saved_model.pb" in os.listdir(path)
                and set(os.listdir(path)) <= SAVED_MODEL_ENTRIES)
    if not (os.path.isfile(path) and path.lower().endswith(SUFFIXES[fmt])):
        return False
    with open(path, "rb") as f:
        return FILE_SIGNATURES[fmt](f.read(8))


def require_modules(fmt):
    """Raises UserError naming the extra to install when `fmt` needs a missing module."""
    missing = [m for m in EXTRA_MODULES.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}; "
                        "install them with: pip install 'deeplab-xception[export]'")
