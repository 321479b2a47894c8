"""Preprocessing and single- or multi-scale + flip prediction, as the official eval does it,
whole or in tiles (`tiling`)."""

import contextlib

import keras
import numpy as np
from keras import ops

from deeplab_xception.backend import enable_compilation_cache
from deeplab_xception.models.depthwise import with_shifted_depthwise
from deeplab_xception.models.dilated import with_shared_space_to_batch
from deeplab_xception.errors import ArgumentError
from deeplab_xception.models.layers import scale_dimension
from deeplab_xception.runtime.precision import positions_per_call, resolve_precision, with_precision
from deeplab_xception.data.preprocessing import preprocess_array
from deeplab_xception.runtime.tiling import DEFAULT_OVERLAP, Pass, ScaledImages, Tiling

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


def inference_copy(model):
    """`model` as the later stages run it on TensorFlow: batch norms folded, dilated
    depthwise convs on tensors rearranged once per run of layers (`dilated`)."""
    return with_shared_space_to_batch(fold_batch_norms(model), pointwise=(_FoldedAway,))


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


@contextlib.contextmanager
def _graph_optimizer_off():
    """TF's graph optimizer (grappler) off for the functions first run inside: on the
    unfolded model it has nothing to fuse and costs 1-2 s on the first image."""
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


# Measured on xception_65 at 513x513, two cores (docs/benchmarks.md, cold start): folding
# costs about 6.6 s once (3.5 s to clone, 3.2 s to retrace) and saves 0.64 s per megapixel,
# so it pays off after some 10 megapixels. Freezing is not a default: on top of the folded
# function it saved 5% at OS 16 and nothing at OS 8, for 3 GiB more peak memory.
FOLD_AFTER_PIXELS = 10_000_000


class InferenceFunction:
    """`model`'s inference for every input size, in stages by the pixels gone through:
    the model as given, as a `tf.function` over its variables (seconds to start); past
    `fold_after_pixels`, a copy with its batch norms folded (`inference_copy`); past
    `freeze_after_pixels` (None: never), that copy as a FrozenGraph (slowest to build).
    The first stage runs without TF's graph optimizer, which only pays on the others.
    One photo pays for neither, a folder of photos soon gains from both. A threshold
    of 0 takes that stage from the start; `folded=True` says `model` already is."""

    input_shape = (None, None, None, 3)

    def __init__(self, model, fold_after_pixels=FOLD_AFTER_PIXELS,
                 freeze_after_pixels=None, folded=False, precision="float32"):
        self.model = model
        self.precisions = {precision}  # what `model` computes in, for reports
        self.fold_after_pixels = (fold_after_pixels if freeze_after_pixels is None
                                  else min(fold_after_pixels, freeze_after_pixels))
        self.freeze_after_pixels = freeze_after_pixels
        self.pixels = 0
        self.folded = model if folded else None
        self.frozen = self.function = None
        self._advance()

    def _traced(self, model):
        import tensorflow as tf

        return tf.function(lambda images: model(images, training=False), jit_compile=False,
                           input_signature=[tf.TensorSpec(self.input_shape, tf.float32)])

    def _past(self, threshold):
        return threshold is not None and (threshold == 0 or self.pixels > threshold)

    def _advance(self):
        if self.frozen is not None:
            return
        if self._past(self.freeze_after_pixels):
            if self.folded is None:
                self.folded = inference_copy(self.model)
            self.frozen, self.function = FrozenGraph(self.folded), None
        elif self.folded is None and self._past(self.fold_after_pixels):
            self.folded = inference_copy(self.model)
            self.function = self._traced(self.folded)
        elif self.function is None:
            self.function = self._traced(self.model if self.folded is None else self.folded)

    def __call__(self, images):
        images = ops.convert_to_tensor(images, "float32")
        self.pixels += int(np.prod(images.shape[:3]))
        self._advance()
        if self.frozen is not None:
            return self.frozen(images)
        if self.folded is None:
            with _graph_optimizer_off():
                return self.function(images)
        return self.function(images)


class JaxFunction:
    """`model`'s inference under JAX: its batch norms folded and its depthwise convs
    shifted (`depthwise`: XLA's grouped conv is slower and compiles for tens of seconds
    on a GPU, docs/benchmarks.md), then one XLA program per
    (input shape, precision), compiled on first use and reused for every later image or
    tile of that shape (and kept across runs in JAX's persistent compilation cache,
    `backend.enable_compilation_cache`). The weights go to the device once and enter
    each program as arguments, not constants, so programs stay small.

    Shapes are not padded to buckets: padding changes the result (image pooling
    averages over the padded map, convs at the border see it), so each whole-image
    size compiles once; tiles come in at most four sizes per scale. `precision`
    "auto" is decided per input shape (`precision.resolve_precision`); `precisions`
    says what ran.
    """

    def __init__(self, model, precision="float32", output_stride=None):
        enable_compilation_cache()
        self.model = model
        self.requested = precision
        self.output_stride = output_stride or getattr(model, "output_stride", None) or 32
        self.precisions = set()
        self.folded = None
        self.programs = {}  # (shape, precision): compiled program
        self.networks = {}  # precision: (jitted function, weights on the device)

    def _network(self, precision):
        import jax

        if precision not in self.networks:
            if self.folded is None:
                self.folded = fold_batch_norms(self.model)
            network = with_shifted_depthwise(with_precision(self.folded, precision))

            def infer(weights, images):
                outputs, _ = network.stateless_call(*weights, images, training=False)
                return outputs

            weights = ([v.value for v in network.trainable_variables],
                       [v.value for v in network.non_trainable_variables])
            self.networks[precision] = (jax.jit(infer), jax.device_put(weights))
        return self.networks[precision]

    def program(self, shape):
        """(compiled program, its weights, its precision) for inputs of `shape`."""
        import jax

        precision = resolve_precision(self.requested,
                                      positions=positions_per_call(shape, self.output_stride))
        function, weights = self._network(precision)
        key = (tuple(shape), precision)
        if key not in self.programs:
            spec = jax.ShapeDtypeStruct(tuple(shape), "float32")
            self.programs[key] = function.lower(weights, spec).compile()
        return self.programs[key], weights, precision

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        program, weights, precision = self.program(images.shape)
        self.precisions.add(precision)
        return np.asarray(program(weights, images))


def compiled_call(model, precision="float32", fold_after_pixels=FOLD_AFTER_PIXELS,
                  freeze_after_pixels=None, output_stride=None):
    """`model` as one inference function for every input size, computing in `precision`
    ("float32", "bfloat16" or "auto", see deeplab_xception.runtime.precision); its `precisions`
    say what ran. On TensorFlow an InferenceFunction (thresholds 0: folded and frozen
    from the start, as benchmarks want); reduced precisions fold first (in float32,
    before the cast), as the cast rebuilds the model anyway. On JAX a JaxFunction,
    folded from the start, which decides "auto" per input shape from `output_stride`
    (default: the model's)."""
    if keras.backend.backend() == "jax":
        resolve_precision(precision)  # checks the name
        return JaxFunction(model, precision, output_stride)
    precision = resolve_precision(precision)
    if precision == "float32":
        return InferenceFunction(model, fold_after_pixels, freeze_after_pixels)
    inference = with_precision(fold_batch_norms(model), precision)
    return InferenceFunction(inference, freeze_after_pixels=freeze_after_pixels, folded=True,
                             precision=precision)


def check_pixel_limit(height, width, scales=(1.0,), max_pixels=DEFAULT_MAX_PIXELS, source=None):
    """Raises an ArgumentError (max_pixels) naming `source` when an image of `height` x `width`
    may not be segmented at `scales`."""
    if max_pixels is None:
        return
    where = f"{source}: " if source else ""
    limit = f"the limit of {max_pixels / 1e6:.3g} megapixels ({{argument}})"
    if height * width > max_pixels:
        raise ArgumentError("max_pixels", f"{where}{width}x{height} pixels "
                                          f"({height * width / 1e6:.3g} megapixels) exceed {limit}")
    for scale in scales:
        scaled = (scale_dimension(height, scale), scale_dimension(width, scale))
        if scaled[0] * scaled[1] > max_pixels:
            raise ArgumentError("max_pixels", f"{where}{width}x{height} pixels at scale {scale:g} become "
                                              f"{scaled[1]}x{scaled[0]} ({scaled[0] * scaled[1] / 1e6:.3g} "
                                              f"megapixels), more than {limit}")


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
    what ran is `self.precision`); logits, resizes, softmax and the average
    over scales and flips are float32 in every precision. Tiling, resizes and
    the average are numpy, the same on every backend. The default here is
    float32, exact; the command line's is "auto" (bfloat16 on CPUs with AMX or
    AVX512_BF16).
    """

    def __init__(self, model, scales=(1.0,), flip=False, tile="auto", overlap=DEFAULT_OVERLAP,
                 max_pixels=DEFAULT_MAX_PIXELS, precision="float32"):
        if not scales or any(s <= 0 for s in scales):
            raise ArgumentError("scales", f"must be positive, got {' '.join(f'{s:g}' for s in scales)}")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.max_pixels = max_pixels
        self.tiling = Tiling(tile, overlap, align=model.output_stride)
        self.requested_precision = precision
        self.logits_model = compiled_call(
            keras.Model(model.input, model.get_layer(model.LOGITS).output), precision,
            output_stride=model.output_stride)
        self.logits_stride = model.logits_stride
        self.on_call = None  # called after each network call, e.g. a progress bar's update

    @property
    def precision(self):
        """What the network computed in: "float32" or "bfloat16", "bfloat16 and float32" where
        `auto` chose per call size (a JAX GPU); before any call, what `auto` means here."""
        ran = self.logits_model.precisions
        return " and ".join(sorted(ran)) if ran else resolve_precision(self.requested_precision)

    def calls(self, height, width):
        """How many network calls (tiles, over scales and flips) one image of `height` x
        `width` takes: what a progress bar counts through `on_call`."""
        sizes = [(scale_dimension(height, s), scale_dimension(width, s)) for s in self.scales]
        return sum(self.tiling.count(*size) for size in sizes) * (1 + self.flip)

    def check_size(self, height, width):
        check_pixel_limit(height, width, self.scales, self.max_pixels)

    def passes(self, images):
        """One `tiling.Pass` per scale and flip of uint8 N x H x W x 3 `images`."""
        if np.ndim(images) != 4 or np.shape(images)[-1] != 3:
            hint = "; one image is images[None]" if np.ndim(images) == 3 else ""
            raise ArgumentError("images", f"expected a batch N x H x W x 3, got shape "
                                          f"{tuple(np.shape(images))}{hint}")
        height, width = int(images.shape[1]), int(images.shape[2])
        self.check_size(height, width)
        passes = []
        for scale in self.scales:
            size = (scale_dimension(height, scale), scale_dimension(width, scale))
            intermediate = (scale_dimension(height, max(1.0, scale) / self.logits_stride),
                            scale_dimension(width, max(1.0, scale) / self.logits_stride))
            for flipped in (False, True)[:1 + self.flip]:
                scaled = ScaledImages(images, size, preprocess_array, flipped)
                logits = self.tiling.logits(self.logits_model, scaled, self.logits_stride,
                                            self.on_call)
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
