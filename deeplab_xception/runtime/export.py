"""Exports a DeepLabv3+ with `segment`'s whole procedure inside: image in, labels out.

The exported graph holds the package's preprocessing, the scales, tiles and
flip, the softmax mean and the argmax (`export_procedure`), so a runtime needs
nothing but the file, and one call does for one image of any size what
`Segmenter` does with the same options. Batch norms are folded into their
convs, as the CLI's inference runs. A SavedModel takes encoded images (what TF
Serving's REST API sends) and uint8 tensors; ONNX and TFLite take one uint8
image. The network computes in float32 unless bfloat16 is asked (SavedModel
only); a TFLite file may be quantized to int8 by the TFLite converter,
calibrated on a few images.
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

from deeplab_xception.errors import ArgumentError
from deeplab_xception.runtime.folding import fold_batch_norms
from deeplab_xception.io import read_image
from deeplab_xception.models.layers import scale_dimension
from deeplab_xception.runtime.precision import with_precision
from deeplab_xception.runtime.tiling import DEFAULT_OVERLAP, Tiling

FORMATS = ("saved_model", "tflite", "onnx")
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
OUTPUTS = ("labels", "probabilities")
PROBABILITIES_DTYPES = ("float32", "float16")
EXPORT_PRECISIONS = ("float32", "bfloat16")
ONNX_OPSET = 17


def export_precision(fmt, precision="float32", quantize=None):
    """What the exported network computes in: "float32", "bfloat16" or "int8". Never
    decided by the exporting machine: a file outlives it. bfloat16 only in a
    SavedModel: ONNX Runtime and TFLite have no bfloat16 convolutions on CPU."""
    if precision not in EXPORT_PRECISIONS:
        raise ArgumentError("precision", f"{precision!r} is not one of "
                                         f"{', '.join(EXPORT_PRECISIONS)} (an export is "
                                         "float32 unless bfloat16 is asked)")
    if quantize not in (None, "int8"):
        raise ArgumentError("quantize", f"{quantize!r} is not int8")
    if quantize:
        if fmt != "tflite":
            raise ArgumentError("quantize", "int8 is for TFLite only")
        if precision == "bfloat16":
            raise ArgumentError("quantize", "int8 and bfloat16 precision: choose one")
        return "int8"
    if fmt != "saved_model" and precision == "bfloat16":
        raise ArgumentError("precision", f"{fmt} runtimes have no bfloat16 CPU kernels; "
                                         "bfloat16 is for saved_model")
    return precision


class ExportOptions:
    """What an export holds: the procedure (scales, flip, tiling), its outputs, the input
    size (None: any), checked before any minute of work."""

    def __init__(self, fmt, scales=(1.0,), flip=False, tile="auto", overlap=DEFAULT_OVERLAP,
                 outputs=("labels",), probabilities_dtype="float32", image_size=None,
                 align=16):
        from deeplab_xception.runtime.export_procedure import exact_in_float32

        if fmt not in FORMATS:
            raise ArgumentError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
        if not scales or any(s <= 0 for s in scales):
            raise ArgumentError("scales", f"must be positive, got {' '.join(map(str, scales))}")
        outputs = tuple(outputs)
        if not outputs or any(o not in OUTPUTS for o in outputs) or "labels" not in outputs:
            raise ArgumentError("outputs", f"{','.join(outputs)!r}: give labels or "
                                           "labels,probabilities")
        if probabilities_dtype not in PROBABILITIES_DTYPES:
            raise ArgumentError("probabilities_dtype", f"{probabilities_dtype!r} is not one of "
                                                       f"{', '.join(PROBABILITIES_DTYPES)}")
        if probabilities_dtype != "float32" and "probabilities" not in outputs:
            raise ArgumentError("probabilities_dtype", "only with the probabilities output")
        if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
            raise ArgumentError("image_size", f"must be two positive sizes, got {image_size}")
        inexact = [s for s in scales if not exact_in_float32(s)]
        if fmt == "tflite" and inexact:
            raise ArgumentError("scales", f"{inexact[0]:g}: TFLite has no float64 to size a "
                                          "scaled image as Python does; use scales in steps "
                                          "of 1/128 (e.g. 0.75 1.25) or another format")
        self.format = fmt
        self.scales = tuple(float(s) for s in scales)
        self.flip = bool(flip)
        self.tiling = Tiling(tile, overlap, align=align)
        self.outputs = outputs
        self.probabilities_dtype = probabilities_dtype
        self.image_size = tuple(image_size) if image_size else None

    def passes(self):
        """(scale, flipped) of each pass."""
        return [(s, f) for s in self.scales for f in (False, True)[:1 + self.flip]]

    def describe(self):
        """One line: what a call of the exported file does."""
        size = "x".join(map(str, self.image_size)) if self.image_size else "any size"
        tile = self.tiling.tile
        if isinstance(tile, tuple):
            tiles = f"tiles of {tile[0]}x{tile[1]}"
        else:
            tiles = "tiles above 1025x2049" if tile == "auto" else "whole"
        outputs = " and ".join(self.outputs)
        if "probabilities" in self.outputs:
            outputs += f" ({self.probabilities_dtype})"
        return (f"uint8 images ({size}) -> {outputs}; scales "
                f"{' '.join(f'{s:g}' for s in self.scales)}{', flip' if self.flip else ''}, "
                f"{tiles}")


def check_request(options, precision="float32", quantize=None, calibration_images=()):
    """What the export of `options` computes in (`export_precision`), or ArgumentError for
    a request it cannot fulfil."""
    computed_in = export_precision(options.format, precision, quantize)
    if quantize and options.image_size is None:
        raise ArgumentError("image_size", "int8 quantization calibrates at a fixed input size")
    if quantize and (len(options.passes()) > 1 or options.tiling.spans(
            *(scale_dimension(n, options.scales[0]) for n in options.image_size))):
        raise ArgumentError("quantize", "TFLite's int8 calibrator cannot run the loops over "
                                        "scales, flips and tiles: int8 holds one scale, no "
                                        "flip, and an input size that needs no tiles")
    if quantize and not calibration_images:
        raise ArgumentError("calibration_images", "int8 quantization needs a few images to "
                                                  "calibrate on")
    if calibration_images and not quantize:
        raise ArgumentError("calibration_images", "only for int8 quantization")
    return computed_in


def _segmenter_module(model, options, precision):
    """A tf.Module whose functions run the procedure: `segment_image` (one uint8 H x W x 3),
    `segment_images` (N of one size), `serve` (N encoded images of one size), each
    returning {"labels": uint8 or int32, "probabilities": ...}; it holds each weight once.
    For ONNX, `onnx_function` instead, with the weights as arguments (`onnx_weights`)."""
    import tensorflow as tf

    from deeplab_xception.runtime.export_procedure import Procedure

    logits = keras.Model(model.input, model.get_layer(model.LOGITS).output)
    network = with_precision(fold_batch_norms(logits), precision)
    size_dtype = tf.float32 if options.format == "tflite" else tf.float64
    labels_dtype = tf.uint8 if model.num_classes <= 256 else tf.int32
    specs = {"labels": tf.TensorSpec([None, None], labels_dtype)}
    if "probabilities" in options.outputs:
        specs["probabilities"] = tf.TensorSpec([None, None, model.num_classes],
                                               options.probabilities_dtype)
    height, width = options.image_size or (None, None)
    image_spec = tf.TensorSpec([height, width, 3], tf.uint8, name="image")

    def segmenting_with(network_call):
        procedure = Procedure(network_call, model.logits_stride, model.num_classes,
                              options.scales, options.flip, options.tiling, size_dtype)

        def one(image):
            labels, probabilities = procedure(image)
            outputs = {"labels": tf.cast(labels, labels_dtype)}
            if "probabilities" in specs:
                outputs["probabilities"] = tf.cast(probabilities, options.probabilities_dtype)
            return outputs
        return one

    module = tf.Module()
    if options.format == "onnx":
        # The weights enter as inputs, made initializers once converted (`_write_onnx`):
        # tf2onnx then converts a graph without 160 MB of constants, in a fraction of the
        # memory, and sees their shapes inside the loops, which it does not for variables.
        def weights_as_inputs(image, trainable, non_trainable):
            return segmenting_with(lambda x: network.stateless_call(
                trainable, non_trainable, x)[0])(image)

        values = [[v.numpy() for v in network.trainable_variables],
                  [v.numpy() for v in network.non_trainable_variables]]
        weight_specs = [[tf.TensorSpec(v.shape, v.dtype, name=f"{kind}_{i}")
                         for i, v in enumerate(group)]
                        for kind, group in zip(("trainable", "non_trainable"), values)]
        module.onnx_function = tf.function(weights_as_inputs,
                                           input_signature=[image_spec, *weight_specs])
        module.onnx_weights = {spec.name: value for group in zip(weight_specs, values)
                               for spec, value in zip(*group)}
        return module
    one = segmenting_with(network)

    def each(images):
        return tf.map_fn(one, images, fn_output_signature=specs, parallel_iterations=1)

    def decoded(image_bytes):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return one(tf.ensure_shape(image, [height, width, 3]))

    module.segment_image = tf.function(one, input_signature=[image_spec])
    module.segment_images = tf.function(
        each, input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")])
    module.serve = tf.function(
        lambda image_bytes: tf.map_fn(decoded, image_bytes, fn_output_signature=specs,
                                      parallel_iterations=1),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    concrete = module.segment_image.get_concrete_function()
    module.weights = list(concrete.variables)  # tracked once: the SavedModel stores each once
    return module


def calibration_data(paths, image_size):
    """The representative dataset of int8 conversion: each image resized to `image_size`."""
    images = [read_image(path) for path in paths]

    def batches():
        for image in images:
            resized = cv2.resize(image, image_size[::-1], interpolation=cv2.INTER_AREA)
            yield [np.asarray(resized, np.uint8)]
    return batches


def _write(module, fmt, written, computed_in, calibration_images, image_size, progress):
    import tensorflow as tf

    if fmt == "saved_model":
        progress("tracing the signatures")
        signatures = {"serving_default": module.serve.get_concrete_function(),
                      "segment_images": module.segment_images.get_concrete_function()}
        progress("writing the SavedModel")
        tf.saved_model.save(module, written, signatures=signatures)
    elif fmt == "onnx":
        _write_onnx(module, written, progress)
    else:
        progress("converting to TFLite")
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [module.segment_image.get_concrete_function()], module)
        if computed_in == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration_data(calibration_images, image_size)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS]
        flatbuffer = converter.convert()
        progress("writing the TFLite file")
        with open(written, "wb") as f:
            f.write(flatbuffer)


def _write_onnx(module, written, progress):
    import onnx
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx  # tf2onnx under numpy 2

    patch_tf2onnx()
    progress("converting to ONNX (the graph, weights as inputs)")
    function = module.onnx_function
    proto, _ = tf2onnx.convert.from_function(function, function.input_signature,
                                             opset=ONNX_OPSET)
    progress("making the weights initializers")
    weights = module.onnx_weights
    for graph_input in [i for i in proto.graph.input if i.name in weights]:
        proto.graph.input.remove(graph_input)
    _fold_weight_layouts(proto.graph, weights)
    progress("writing the ONNX file")
    onnx.save(proto, written)


# What tf2onnx puts between a weight and its conv (HWIO to OIHW, depthwise regrouping):
# ops onnxruntime does not fold inside loop bodies, so each tile would redo them.
LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast"}


def _fold_weight_layouts(graph, weights):
    """Makes `weights` ({name: array}) initializers of the ONNX `graph`, with the layout ops
    that read only weights and constants (in the graph and its loop bodies) computed
    once here by onnx's reference evaluator; keeps only the values some node still reads."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    values, constant_nodes = dict(weights), set()

    def fold(subgraph):
        folded = []
        for node in subgraph.node:
            if node.op_type == "Constant":  # kept, and read as a value here
                values[node.output[0]] = ReferenceEvaluator(node).run(None, {})[0]
                constant_nodes.add(node.output[0])
            if node.op_type in LAYOUT_OPS and all(name in values for name in node.input if name):
                outputs = ReferenceEvaluator(node).run(
                    None, {name: values[name] for name in node.input if name})
                values.update(zip(node.output, outputs))
                folded.append(node)
                continue
            if node.op_type == "Loop":
                _unthread_constants(subgraph, node, values)
            for attribute in node.attribute:
                for body in [attribute.g, *attribute.graphs]:
                    fold(body)
        for node in folded:
            subgraph.node.remove(node)

    fold(graph)
    given = {tensor.name for tensor in graph.initializer} | constant_nodes
    graph.initializer.extend(numpy_helper.from_array(values[name], name)
                             for name in sorted(_names_read(graph) & values.keys() - given))


def _unthread_constants(graph, loop, values):
    """Removes the state variables of `loop` (a Loop node of `graph`) that carry one of
    `values` unchanged through each iteration, as tf2onnx threads the weights into loop
    bodies: the body then reads the value itself, as an outer-scope name, which makes its
    layout ops foldable and spares the runtime carrying each weight through every tile."""
    body = next(a.g for a in loop.attribute if a.name == "body")
    identities = {n.output[0]: n.input[0] for n in body.node if n.op_type == "Identity"}
    for k in reversed(range(len(loop.input) - 2)):
        outer, inner = loop.input[2 + k], body.input[2 + k].name
        carried = body.output[1 + k].name
        if outer not in values or identities.get(carried, carried) != inner:
            continue
        _rename_reads(body, inner, outer)
        _rename_reads(graph, loop.output[k], outer)
        del loop.input[2 + k], body.input[2 + k], body.output[1 + k], loop.output[k]


def _rename_reads(graph, old, new):
    """Every read of tensor `old` in `graph` and its subgraphs reads `new` instead."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                _rename_reads(subgraph, old, new)


def _names_read(graph):
    """The tensor names that the nodes of an ONNX graph and of its subgraphs (loop bodies) read."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                names |= _names_read(subgraph)
    return names


def export(model, path, fmt, options=None, precision="float32", quantize=None,
           calibration_images=(), overwrite=False, progress=None):
    """Writes `model` with the procedure of `options` (an ExportOptions; default: one scale,
    no flip, auto tiles, labels) in format `fmt` ("saved_model", "tflite" or "onnx") at `path`.

    The network computes in export_precision(fmt, precision, quantize);
    `quantize="int8"` (TFLite, a fixed image size) calibrates on `calibration_images`
    (paths). `progress(stage)` is told each stage. The export goes to a temporary
    name beside `path` and is renamed into place, so a failure leaves no half-written
    output. An existing `path` is refused unless `overwrite`, and even then only a
    previous export of the same format is replaced (see `check_target`).
    """
    options = options or ExportOptions(fmt, align=model.output_stride)
    if options.format != fmt:
        raise ArgumentError("options", f"made for {options.format}, not {fmt}")
    computed_in = check_request(options, precision, quantize, calibration_images)
    path = _without_trailing_separator(os.fspath(path))
    check_target(path, fmt, overwrite)
    require_modules(fmt)
    progress = progress or (lambda stage: None)
    progress("folding batch norms and building the graph")
    module = _segmenter_module(model, options, computed_in if computed_in == "bfloat16"
                               else "float32")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix="-" + os.path.basename(path),
                               dir=directory)
    previous = os.path.join(staging, PREVIOUS)
    written = os.path.join(staging, "export" + SUFFIXES.get(fmt, ""))
    try:
        _write(module, fmt, written, computed_in, calibration_images, options.image_size,
               progress)
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
        print(f"{path}: put back the previous export that an interrupted overwrite "
              f"left in {staging}", file=sys.stderr)
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise ArgumentError("output", f"{path} already exists; give {{overwrite}} to replace "
                            f"a previous {fmt} export", mentions=("overwrite",))
    real = os.path.realpath(path)
    protected = {os.path.realpath(p) for p in (os.sep, os.path.expanduser("~"))}
    cwd = os.path.realpath(os.getcwd())
    if real in protected or cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        raise ArgumentError("output", f"{path} is the working, home or root folder; "
                            "choose a new path")
    if not is_previous_export(path, fmt):
        raise ArgumentError("output", f"{path} is not a previous {fmt} export; "
                            "{overwrite} replaces nothing else", mentions=("overwrite",))


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
        raise ArgumentError("format", f"{{argument}} {fmt}: needs {' and '.join(missing)}; "
                            "install them with: pip install 'deeplab-xception[export]'")
