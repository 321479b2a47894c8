"""Preprocessing and single- or multi-scale + flip prediction, as the official eval does it,
whole or in tiles (`tiling`)."""

import keras
import numpy as np
from keras import ops

from deeplab_xception.errors import UserError
from deeplab_xception.layers import scale_dimension
from deeplab_xception.precision import resolve_precision, with_precision
from deeplab_xception.preprocessing import preprocess
from deeplab_xception.tiling import DEFAULT_OVERLAP, Pass, ScaledImages, Tiling

DEFAULT_MAX_PIXELS = 100_000_000
BAND_VALUES = 1 << 22  # probabilities are computed in blocks of rows of about this many values


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


class FrozenGraph:
    """`model`'s inference as one TensorFlow graph, with the weights as constants.

    One graph with unknown batch and spatial sizes serves every image, so
    images of new sizes never retrace. With the weights constant, TF's graph
    optimizer can fold and fuse across layers. No XLA: its depthwise conv is
    several times slower on CPU. A snapshot: later changes to the
    model's weights do not reach it.
    """

    def __init__(self, model):
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)

        traced = tf.function(lambda images: model(images, training=False), jit_compile=False)
        concrete = traced.get_concrete_function(tf.TensorSpec((None, None, None, 3), tf.float32))
        self.function = convert_variables_to_constants_v2(concrete)

    @property
    def input_shape(self):
        return tuple(self.function.inputs[0].shape)

    def __call__(self, images):
        return self.function(ops.convert_to_tensor(images, "float32"))[0]


# Freezing xception_65 costs about 16 s on two cores and a few copies of the weights once,
# and then saves about a fifth of each run (0.60 -> 0.48 s per 513x513 image at OS 16,
# docs/benchmarks.md): it pays off after some 35 megapixels, ~130 such images.
FREEZE_AFTER_PIXELS = 35_000_000


class InferenceFunction:
    """`model`'s inference for every input size, first as a `tf.function` that reads
    the variables (seconds to start), then, once `freeze_after_pixels` pixels have
    gone through, as a FrozenGraph (faster per image, slow to build): one photo
    never pays for freezing, a folder of photos soon gains from it."""

    input_shape = (None, None, None, 3)

    def __init__(self, model, freeze_after_pixels=FREEZE_AFTER_PIXELS):
        import tensorflow as tf

        self.model = model
        self.freeze_after_pixels = freeze_after_pixels
        self.pixels = 0
        self.frozen = FrozenGraph(model) if freeze_after_pixels == 0 else None
        self.function = tf.function(
            lambda images: model(images, training=False), jit_compile=False,
            input_signature=[tf.TensorSpec(self.input_shape, tf.float32)])

    def __call__(self, images):
        images = ops.convert_to_tensor(images, "float32")
        if self.frozen is None:
            self.pixels += int(np.prod(images.shape[:3]))
            if self.pixels <= self.freeze_after_pixels:
                return self.function(images)
            self.frozen = FrozenGraph(self.model)
        return self.frozen(images)


def compiled_call(model, precision="float32", freeze_after_pixels=FREEZE_AFTER_PIXELS):
    """`model` as one inference function for every input size, batch norms folded
    (in float32, before any cast) and computing in `precision` ("float32",
    "bfloat16" or "auto", see deeplab_xception.precision): an InferenceFunction on
    TensorFlow (freeze_after_pixels=0: frozen from the start, as benchmarks want);
    other backends call the folded model directly."""
    inference = with_precision(fold_batch_norms(model), resolve_precision(precision))
    if keras.backend.backend() != "tensorflow":
        return lambda images: inference(images, training=False)
    return InferenceFunction(inference, freeze_after_pixels)


def pixel_limit_problem(height, width, scales=(1.0,), max_pixels=DEFAULT_MAX_PIXELS):
    """Why an image of `height` x `width` may not be segmented at `scales`, or None."""
    if max_pixels is None:
        return None
    limit = f"the limit of {max_pixels / 1e6:.3g} megapixels (--max-pixels)"
    if height * width > max_pixels:
        return f"{width}x{height} pixels ({height * width / 1e6:.3g} megapixels) exceed {limit}"
    for scale in scales:
        scaled = (scale_dimension(height, scale), scale_dimension(width, scale))
        if scaled[0] * scaled[1] > max_pixels:
            return (f"{width}x{height} pixels at scale {scale:g} become {scaled[1]}x{scaled[0]} "
                    f"({scaled[0] * scaled[1] / 1e6:.3g} megapixels), more than {limit}")
    return None


def _preprocess_array(images):
    return ops.convert_to_numpy(preprocess(images))


class Segmenter:
    """Class probabilities for images of any size from a DeepLabV3Plus.

    For each scale s the image is resized (align corners) to
    scale_dimension(H, s) x scale_dimension(W, s); the logits at their own
    stride are resized to scale_dimension(H, max(1, s) / stride), then to
    H x W; the result is the mean of the softmaxes over scales and flips.
    `tile` says how each scaled image gets its logits (see `tiling`): "auto"
    runs it whole up to `tiling.AUTO_WHOLE_PIXELS` and in 513 x 513 tiles
    above, "off" (or None) always whole, (h, w) in tiles of that size that
    overlap by `overlap`. Probabilities are computed a block of rows at a time,
    so `labels` never holds more than the logits of the passes and one block.
    Images (and their scaled sizes) over `max_pixels` are refused.
    The network computes in `precision` ("float32", "bfloat16" or "auto",
    the one that ran is `self.precision`); logits, resizes, softmax and the
    average over scales and flips are float32 in every precision.
    """

    def __init__(self, model, scales=(1.0,), flip=False, tile="auto", overlap=DEFAULT_OVERLAP,
                 max_pixels=DEFAULT_MAX_PIXELS, precision="float32"):
        if not scales or any(s <= 0 for s in scales):
            raise UserError(f"--scales: must be positive, got {' '.join(f'{s:g}' for s in scales)}")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.max_pixels = max_pixels
        self.tiling = Tiling(tile, overlap, align=model.output_stride)
        self.precision = resolve_precision(precision)
        self.logits_model = compiled_call(
            keras.Model(model.input, model.get_layer(model.LOGITS).output), self.precision)
        self.logits_stride = model.logits_stride

    def check_size(self, height, width):
        problem = pixel_limit_problem(height, width, self.scales, self.max_pixels)
        if problem:
            raise UserError(problem)

    def passes(self, images):
        """One `tiling.Pass` per scale and flip of uint8 N x H x W x 3 `images`."""
        height, width = int(images.shape[1]), int(images.shape[2])
        self.check_size(height, width)
        passes = []
        for scale in self.scales:
            size = (scale_dimension(height, scale), scale_dimension(width, scale))
            intermediate = (scale_dimension(height, max(1.0, scale) / self.logits_stride),
                            scale_dimension(width, max(1.0, scale) / self.logits_stride))
            for flipped in (False, True)[:1 + self.flip]:
                scaled = ScaledImages(images, size, _preprocess_array, flipped)
                logits = self.tiling.logits(self.logits_model, scaled, self.logits_stride)
                passes.append(Pass(logits, intermediate, (height, width), flipped))
        return passes

    def bands(self, images):
        """(rows, N x rows x W x C probabilities) for blocks of rows from top to bottom."""
        passes = self.passes(images)
        count, height, width = (int(d) for d in images.shape[:3])
        step = max(1, BAND_VALUES // (count * width * self.model.num_classes))
        for top in range(0, height, step):
            rows = slice(top, min(top + step, height))
            yield rows, sum(p.probabilities(rows) for p in passes) / len(passes)

    def probabilities(self, images):
        """Batch of uint8 N x H x W x 3 images to float32 N x H x W x C probabilities."""
        return np.concatenate([band for _, band in self.bands(images)], axis=1)

    def labels(self, images, probabilities=None):
        """uint8 N x H x W labels; image i's H x W x C probabilities are also stored into
        `probabilities[i]` (an array or a memory-mapped .npy) when given."""
        labels = np.empty(images.shape[:3], np.uint8)
        for rows, band in self.bands(images):
            labels[:, rows] = band.argmax(axis=-1)
            for out, values in zip(() if probabilities is None else probabilities, band):
                out[rows] = values
        return labels
