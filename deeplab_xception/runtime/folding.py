"""Batch-norm folding: a conv and the batch norm after it as one conv with bias, for inference."""

import keras
import numpy as np

from deeplab_xception.models.dilated import with_shared_space_to_batch


class _FoldedAway(keras.layers.Layer):
    """Stands where a batch norm was folded into the conv before it."""

    def call(self, inputs, mask=None):
        return inputs


def _conv_feeding_only(batch_norm):
    """The bias-free conv whose output goes to `batch_norm` alone, or None."""
    nodes = batch_norm._inbound_nodes
    if len(nodes) != 1 or len(nodes[0].parent_nodes) != 1:
        return None
    conv = nodes[0].parent_nodes[0].operation
    convs = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    if (not isinstance(conv, convs) or conv.use_bias or len(conv._inbound_nodes) != 1
            or len(conv._outbound_nodes) != 1 or batch_norm.axis not in (-1, 3)):
        return None
    return conv


def _folded_weights(conv, batch_norm):
    """Kernel x gamma / sqrt(var + eps) and bias beta - mean x that scale, in float64."""
    mean = np.asarray(batch_norm.moving_mean, np.float64)
    scale = 1.0 / np.sqrt(np.asarray(batch_norm.moving_variance, np.float64) + batch_norm.epsilon)
    if batch_norm.scale:
        scale = scale * np.asarray(batch_norm.gamma, np.float64)
    bias = -mean * scale
    if batch_norm.center:
        bias = bias + np.asarray(batch_norm.beta, np.float64)
    kernel = np.asarray(conv.kernel, np.float64)
    if isinstance(conv, keras.layers.DepthwiseConv2D):  # (h, w, in, multiplier)
        scale = scale.reshape(kernel.shape[2], kernel.shape[3])
    return [(kernel * scale).astype("float32"), bias.astype("float32")]


def fold_batch_norms(model):
    """An inference copy of `model` with each batch norm folded into the conv before it.

    Every conv (regular or depthwise, no bias) that feeds one batch norm alone
    becomes a conv with bias, and the batch norm disappears: at inference the
    two are one affine map. TensorFlow's graph optimizer folds batch norms into
    regular convs by itself but not into depthwise ones, where each stays a
    multiply and an add over the tensor; folding here makes xception_65 5-9%
    faster on CPU.
    Outputs agree with `model` to float32 rounding. A snapshot, for inference only.
    """
    pairs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            conv = _conv_feeding_only(layer)
            if conv is not None:
                pairs[conv.name] = (conv, layer)
    folded = {batch_norm.name for _, batch_norm in pairs.values()}

    def clone(layer):
        if layer.name in folded:
            return _FoldedAway(name=layer.name)
        config = layer.get_config()
        if layer.name in pairs:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    inference = keras.models.clone_model(model, clone_function=clone)
    originals = {layer.name: layer for layer in model.layers}
    for layer in inference.layers:
        if layer.name in pairs:
            layer.set_weights(_folded_weights(*pairs[layer.name]))
        elif layer.weights:
            layer.set_weights(originals[layer.name].get_weights())
    return inference


def inference_copy(model):
    """`model` as the later stages run it on TensorFlow: batch norms folded, dilated
    depthwise convs on tensors rearranged once per run of layers (`dilated`)."""
    return with_shared_space_to_batch(fold_batch_norms(model), pointwise=(_FoldedAway,))
