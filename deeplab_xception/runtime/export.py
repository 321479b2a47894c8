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
import re
import shutil
import sys
import tempfile

import cv2
import keras
import numpy as np
from keras import ops

from deeplab_xception.errors import UserError
from deeplab_xception.runtime.inference import fold_batch_norms
from deeplab_xception.io import read_image
from deeplab_xception.runtime.precision import resolve_precision, with_precision
from deeplab_xception.data.preprocessing import preprocess

FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}  # Keras' LiteRT exporter insists on its own


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
           calibration_images=(), overwrite=False):
    """Writes `model` in format `fmt` ("saved_model", "tflite" or "onnx") at `path`.

    The network computes in export_precision(fmt, precision, quantize);
    `quantize="int8"` (TFLite) calibrates on `calibration_images` (paths).
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
    computed_in = export_precision(fmt, precision, quantize)
    if calibration_images and not quantize:
        raise UserError("--calibration-images: only for --quantize int8")
    options = _int8_options(calibration_images, image_size) if quantize else {}
    path = _without_trailing_separator(os.fspath(path))
    check_target(path, fmt, overwrite)
    require_modules(fmt)
    serving = serving_model(model, image_size,
                            "bfloat16" if computed_in == "bfloat16" else "float32")
    signature = [keras.InputSpec(shape=serving.inputs[0].shape, dtype="uint8", name="images")]
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix="-" + os.path.basename(path),
                               dir=directory)
    previous = os.path.join(staging, PREVIOUS)
    written = os.path.join(staging, "export" + SUFFIXES.get(fmt, ""))
    try:
        serving.export(written, format=FORMATS[fmt], input_signature=signature, verbose=False,
                       **options)
        _swap_in(written, path, previous)
    finally:
        if os.path.lexists(path) or not os.path.lexists(previous):  # else `recover` finds it
            shutil.rmtree(staging)
    return path


def _swap_in(written, path, previous):
    """Renames `written` onto `path`, a previous export first set aside as `previous`; an
    interruption between the two renames puts it back, and a kill leaves it for `recover`."""
    if os.path.lexists(path):
        os.replace(path, previous)
    try:
        os.replace(written, path)
    except BaseException:
        if os.path.lexists(previous) and not os.path.lexists(path):
            os.replace(previous, path)
        raise


    return path


# What an export writes in a SavedModel folder, and its staging folder's names.
SAVED_MODEL_FILE = re.compile(r"(saved_model|fingerprint)\.pb|variables/variables\.(index|data-\d+-of-\d+)")
SAVED_MODEL_FOLDERS = {"variables", "assets"}
STAGING_PREFIX, PREVIOUS = ".tmp-", "previous"
# How each file format is recognized, beside its extension: a test of its first bytes.
FILE_SIGNATURES = {
    "onnx": lambda head: head[:1] == b"\x08",  # ModelProto starts with ir_version
    "tflite": lambda head: head[4:8] == b"TFL3",  # the flatbuffer's identifier
}
# What a format needs beyond the core install (the `export` extra installs it).
EXTRA_MODULES = {"onnx": ("tf2onnx", "onnx")}


def _without_trailing_separator(path):
    """`out/` names `out` itself: a link stays a link (and is refused), not the folder it points to."""
    return path.rstrip(os.sep) or os.sep


def recover(path):
    """Puts back a previous export that an --overwrite killed between its two renames left
    in its staging folder beside `path`; returns the folder it came from, or None."""
    directory = os.path.dirname(os.path.abspath(path))
    ours = re.compile(re.escape(STAGING_PREFIX) + "[^-]+-" + re.escape(os.path.basename(path)))
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        staging = os.path.join(directory, name)
        previous = os.path.join(staging, PREVIOUS)
        if ours.fullmatch(name) and os.path.isdir(staging) and os.path.lexists(previous) \
                and not os.path.lexists(path):
            os.replace(previous, path)
            shutil.rmtree(staging)
            return staging
    return None


def check_target(path, fmt, overwrite):
    """Raises UserError unless `path` is free, or `overwrite` and `path` is a previous
    `fmt` export: never a folder that holds anything else, the working folder, one above
    it, the home folder or the root. First puts back a previous export that an interrupted
    --overwrite left aside (see `recover`), saying so on stderr."""
    path = _without_trailing_separator(os.fspath(path))
    staging = recover(path)
    if staging:
        print(f"{path}: put back the previous export that an interrupted --overwrite "
              f"left in {staging}", file=sys.stderr)
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
    """Whether `path` holds a `fmt` export and nothing else, recognized by its contents: a
    SavedModel folder holds only the files and folders an export writes, at any depth."""
    if os.path.islink(path):
        return False
    if fmt == "saved_model":
        return os.path.isdir(path) and _only_saved_model_files(path)
    if not (os.path.isfile(path) and path.lower().endswith(SUFFIXES[fmt])):
        return False
    with open(path, "rb") as f:
        return FILE_SIGNATURES[fmt](f.read(8))


def _only_saved_model_files(path):
    found_graph = False
    for folder, subfolders, files in os.walk(path):
        relative = os.path.relpath(folder, path)
        for name in subfolders:
            if os.path.islink(os.path.join(folder, name)) or relative != "." \
                    or name not in SAVED_MODEL_FOLDERS:
                return False
        for name in files:
            entry = os.path.normpath(os.path.join(relative, name)).replace(os.sep, "/")
            if os.path.islink(os.path.join(folder, name)) or not SAVED_MODEL_FILE.fullmatch(entry):
                return False
            found_graph |= entry == "saved_model.pb"
    return found_graph


def require_modules(fmt):
    """Raises UserError naming the extra to install when `fmt` needs a missing module."""
    missing = [m for m in EXTRA_MODULES.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format {fmt}: needs {' and '.join(missing)}; "
                        "install them with: pip install 'deeplab-xception[export]'")
