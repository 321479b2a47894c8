"""What several test files need: random but well-conditioned weights, a small non-Xception
encoder, the TF profiler's multiply-add count, and where the shipped configs are."""


import keras
import numpy as np
import tensorflow as tf

from deeplab_xception.models.backbones import Backbone

def config_path(name):
    """The shipped config `name` (e.g. "pretrain_imagenet"), for `load_config`."""
    return f"{name}.yaml"


def randomize_weights(model, seed=0, scale=0.1):
    """Normal(0, scale) everywhere, batch-norm variances 1 + |normal| (never near zero)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0.0, scale, w.shape)
        if "variance" in w.path:
            value = 1.0 + np.abs(value)
        w.assign(value.astype("float32"))


def profiled_multiply_adds(model, image_size, op_types):
    """TF profiler float ops / 2 of the model traced at batch 1, counting only `op_types`."""
    spec = tf.TensorSpec((1, *image_size, 3))
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = dict(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation(),
                   output="none", account_type_regexes=op_types)
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 2


@keras.saving.register_keras_serializable(package="tests")
class SmallConvEncoder(Backbone):
    """A new encoder family in one class: four conv + BN + ReLU stages of stride 2,
    dilated instead of strided past `output_stride`, nothing from Xception."""

    CONFIG = ("output_stride", "input_shape", "batch_norm_momentum", "dtype")
    WIDTHS = (8, 16, 24, 32)

    def __init__(self, output_stride=16, input_shape=(None, None, 3), batch_norm_momentum=0.99,
                 dtype="float32", **kwargs):
        if output_stride not in self.reachable_output_strides():
            raise ValueError(f"output_stride: cannot run at {output_stride}")
        inputs = x = keras.Input(shape=tuple(input_shape), name="images")
        pyramid, stride, rate = {}, 1, 1
        for i, width in enumerate(self.WIDTHS, start=1):
            if stride == output_stride:
                step, dilation, rate = 1, rate, rate * 2
            else:
                if stride > 1:
                    pyramid[stride] = x
                step, dilation, stride = 2, 1, stride * 2
            x = keras.layers.Conv2D(width, 3, strides=step, dilation_rate=dilation, padding="same",
                                    use_bias=False, name=f"stage{i}", dtype=dtype)(x)
            x = keras.layers.BatchNormalization(momentum=batch_norm_momentum, name=f"stage{i}.bn",
                                                dtype=dtype)(x)
            x = keras.layers.ReLU(name=f"stage{i}.relu", dtype=dtype)(x)
        pyramid[output_stride] = x
        super().__init__(inputs, x, pyramid, output_stride, dtype,
                         name=kwargs.pop("name", "small_conv"), **kwargs)
        self.image_shape = tuple(input_shape)
        self.batch_norm_momentum = batch_norm_momentum

    @classmethod
    def reachable_output_strides(cls, **config):
        return (4, 8, 16)


def central_crop_resized(image, fraction, size):
    """The central `fraction` of an H x W x 3 image (TF's rounding), bilinearly resized to
    size x size with OpenCV in float: an implementation independent of the package's."""
    import cv2

    height, width = image.shape[:2]
    top, left = int((height - height * fraction) / 2), int((width - width * fraction) / 2)
    crop = image[top:height - top, left:width - left].astype(np.float32)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
