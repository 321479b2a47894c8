"""Layers the official DeepLab graph needs that Keras does not ship as such."""

import contextlib
import threading

import keras
from keras import ops

from deeplab_xception.backend import keep_keras_off_tensorflow

keep_keras_off_tensorflow()  # every model module imports this one

# Batch norm of the released checkpoints: slim's decay 0.9997 everywhere, epsilon
# 1e-3 in the backbone (xception_arg_scope) and 1e-5 in the DeepLab head.
BATCH_NORM_MOMENTUM = 0.9997
BACKBONE_EPSILON = 1e-3
HEAD_EPSILON = 1e-5


_building = threading.local()


@contextlib.contextmanager
def weights_to_come():
    """Models built inside start from zeros instead of drawing truncated-normal values:
    for loaders that overwrite every weight at once (drawing xception_65's 41M values
    is about a second of a cold start)."""
    before = getattr(_building, "weights_to_come", False)
    _building.weights_to_come = True
    try:
        yield
    finally:
        _building.weights_to_come = before


def truncated_normal(stddev):
    """The official initializer, or zeros inside `weights_to_come`."""
    if getattr(_building, "weights_to_come", False):
        return "zeros"
    return keras.initializers.TruncatedNormal(stddev=stddev)


def dtype_policy_name(dtype):
    """The name of a Keras dtype policy ("float32", "mixed_bfloat16", ...) given as name or object.

    Models take it as an explicit argument and give it to every layer, so no
    global Keras setting decides their precision.
    """
    return keras.dtype_policies.get(dtype).name


def batch_norm_layers(model):
    """Every BatchNormalization layer of `model`."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def configure_batch_norms(model, trainable=None, synchronized=None):
    """Training-time batch-norm switches (frozen statistics, cross-replica sync), set in one place.

    Momentum and epsilon are build-time arguments of the models; these two
    depend on how the model is trained, not on what it is.
    """
    for layer in batch_norm_layers(model):
        if trainable is not None:
            layer.trainable = trainable
        if synchronized is not None:
            layer.synchronized = synchronized


def tag_section(inputs, outputs, section):
    """Tags every layer between `inputs` and `outputs` with `layer.section` (first tag wins).

    Builders call it as they walk, so the budget breakdown reads which part of
    the model (entry_flow, aspp, decoder, ...) a layer belongs to off the layer.
    It follows each symbolic tensor back to the layer call that made it, and
    adds nothing to the graph.
    """
    stop = {id(t) for t in keras.tree.flatten(inputs)}
    pending, seen = list(keras.tree.flatten(outputs)), set()
    while pending:
        tensor = pending.pop()
        if id(tensor) in stop or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        layer, node_index, _ = tensor._keras_history
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not hasattr(layer, "section"):
            layer.section = section
        pending.extend(layer._inbound_nodes[node_index].input_tensors)


def scale_dimension(dim, scale):
    """Size of a dimension scaled the way DeepLab scales crops: (d - 1) * s + 1."""
    return int((dim - 1) * scale + 1)


def fixed_padding(kernel_size, rate=1):
    """(begin, end) padding that a strided conv needs to align like TF-slim's conv2d_same."""
    effective = kernel_size + (kernel_size - 1) * (rate - 1)
    total = effective - 1
    return total // 2, total - total // 2


def _interpolation_matrix(out_size, in_size, dtype):
    """Rows of an align-corners bilinear resize from `in_size` to `out_size` samples."""
    scale = ops.cast(in_size - 1, "float32") / ops.cast(ops.maximum(out_size - 1, 1), "float32")
    source = ops.cast(ops.arange(out_size), "float32") * scale
    lower = ops.minimum(ops.cast(ops.floor(source), "int32"), in_size - 1)
    upper = ops.minimum(lower + 1, in_size - 1)
    weight = source - ops.cast(lower, "float32")
    matrix = (ops.one_hot(lower, in_size, dtype="float32") * (1.0 - weight)[:, None]
              + ops.one_hot(upper, in_size, dtype="float32") * weight[:, None])
    return ops.cast(matrix, dtype)


def resize_align_corners(images, size):
    """Bilinear resize with align_corners=True (TF1 semantics), for NHWC images.

    Two small interpolation matrices, one over rows and one over columns, so it
    runs on every backend and exports to every format.
    """
    height, width = size
    in_height, in_width = ops.shape(images)[1], ops.shape(images)[2]
    rows = _interpolation_matrix(height, in_height, images.dtype)
    cols = _interpolation_matrix(width, in_width, images.dtype)
    images = ops.einsum("hH,bHWc->bhWc", rows, images)
    return ops.einsum("wW,bhWc->bhwc", cols, images)


@keras.saving.register_keras_serializable(package="deeplab_xception")
class ResizeLike(keras.layers.Layer):
    """Resizes `inputs` (align corners) to the spatial size of `reference`."""

    def call(self, inputs, reference):
        shape = ops.shape(reference)
        return resize_align_corners(inputs, (shape[1], shape[2]))

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (inputs_shape[0], reference_shape[1], reference_shape[2], inputs_shape[3])


@keras.saving.register_keras_serializable(package="deeplab_xception")
class GlobalMeanPool(keras.layers.Layer):
    """Mean over height and width, kept as a 1x1 map (DeepLab's image pooling)."""

    def call(self, inputs):
        return ops.mean(inputs, axis=(1, 2), keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[3])
