"""One inference function for every input size: on TensorFlow staged by the pixels gone
through (traced, folded, frozen), on JAX one XLA program per input shape."""

import contextlib

import keras
import numpy as np
from keras import ops

from deeplab_xception.backend import enable_compilation_cache
from deeplab_xception.models.depthwise import with_shifted_depthwise
from deeplab_xception.runtime.folding import fold_batch_norms, inference_copy
from deeplab_xception.runtime.precision import positions_per_call, resolve_precision, with_precision


class FrozenGraph:
    """`model`'s inference as one TensorFlow graph, with the weights as constants.

    One graph with unknown batch and spatial sizes serves every image, so
    images of new sizes never retrace. With the weights constant, TF's graph
    optimizer can fold and fuse across layers. No XLA: its depthwise conv is
    several times slower on CPU. A snapshot: later changes to the
    model's weights do not reach it. `input_shape` fixes sizes, as an export does.
    """

    def __init__(self, model, input_shape=(None, None, None, 3)):
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)

        traced = tf.function(lambda images: model(images, training=False), jit_compile=False)
        concrete = traced.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
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
    from the start, as benchmarks want); reduced precisions take the folded stage from
    the start (`inference_copy`, folded in float32 before the cast), as the cast
    rebuilds the model anyway. On JAX a JaxFunction,
    folded from the start, which decides "auto" per input shape from `output_stride`
    (default: the model's)."""
    if keras.backend.backend() == "jax":
        resolve_precision(precision)  # checks the name
        return JaxFunction(model, precision, output_stride)
    precision = resolve_precision(precision)
    if precision == "float32":
        return InferenceFunction(model, fold_after_pixels, freeze_after_pixels)
    inference = with_precision(inference_copy(model), precision)
    return InferenceFunction(inference, freeze_after_pixels=freeze_after_pixels, folded=True,
                             precision=precision)
