"""Shifted depthwise convs compute what tf.nn.depthwise_conv2d computes, and a model with
them shifted what the model computes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.models.depthwise import ShiftedDepthwiseConv2D, shiftable, with_shifted_depthwise
from helpers import randomize_weights

CASES = [  # height, width, kernel, stride, rate, padding (tf.nn takes no stride with a rate)
    (13, 17, 3, 1, 1, "same"), (13, 17, 3, 1, 4, "same"), (9, 9, 3, 1, 12, "same"),
    (14, 15, 3, 2, 1, "valid"), (16, 16, 5, 2, 1, "valid"), (6, 7, 5, 1, 3, "same"),
]


@pytest.mark.parametrize("height, width, kernel, stride, rate, padding", CASES)
def test_shifted_depthwise_matches_tf_nn(height, width, kernel, stride, rate, padding):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, height, width, 5)).astype("float32")
    layer = ShiftedDepthwiseConv2D(kernel, strides=stride, dilation_rate=rate, padding=padding,
                                   use_bias=True)
    layer.build(images.shape)
    weights = [rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    expected = tf.nn.depthwise_conv2d(images, weights[0], (1, stride, stride, 1), padding.upper(),
                                      dilations=(rate, rate)) + weights[1]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images)), expected, atol=2e-5)


def test_a_model_with_shifted_depthwise_convs_computes_the_same():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4, output_stride=8)
    randomize_weights(model, seed=3, scale=0.2)
    shifted = with_shifted_depthwise(model)
    assert sum(isinstance(layer, ShiftedDepthwiseConv2D) for layer in shifted.layers) == sum(
        shiftable(layer) for layer in model.layers) > 0
    images = np.random.default_rng(4).uniform(-1, 1, (1, 37, 45, 3)).astype("float32")
    np.testing.assert_allclose(shifted(images), model(images), atol=1e-4)
