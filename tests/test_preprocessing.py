"""The input contract: value range, mean pixel, the classifier's evaluation crop."""

import numpy as np
import pytest
from keras import ops

from deeplab_xception.data.preprocessing import (
    CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE, MEAN_PIXEL, classifier_eval_array, pad_to_crop_array,
    pad_to_crop_tf, preprocess, preprocess_array)
from helpers import central_crop_resized
from deeplab_xception.pretrain.preprocessing import classifier_eval_image


def test_value_range_is_minus_one_to_one_with_the_mean_pixel_at_zero():
    values = ops.convert_to_numpy(preprocess(np.array([0, MEAN_PIXEL, 255], np.float32)))
    np.testing.assert_allclose(values, [-1.0, 0.0, 1.0], atol=1e-7)
    assert ops.convert_to_numpy(preprocess(np.uint8([255]))).dtype == np.float32
    pixels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_array(pixels), ops.convert_to_numpy(preprocess(pixels)))


@pytest.mark.parametrize("shape", [(480, 640), (333, 301), (40, 50)])
def test_classifier_eval_image_is_the_inception_central_crop(shape):
    image = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    expected = central_crop_resized(image, 0.875, 299) / 127.5 - 1.0  # the Inception eval
    assert (CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE) == (0.875, 299)
    evaluator = ops.convert_to_numpy(classifier_eval_image(image))  # pretraining's, in TensorFlow
    np.testing.assert_allclose(evaluator, expected, atol=1e-4)
    np.testing.assert_allclose(classifier_eval_array(image), evaluator, atol=1e-4)  # classify's


@pytest.mark.parametrize("crop", [(7, 6), (3, 6), (5, 4)])
def test_numpy_and_tf_pad_to_the_crop_as_the_official_pipeline(crop):
    """Bottom and right, 127.5 and 255 (DeepLab's input pipeline), never cropped."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (5, 4, 1), dtype=np.uint8)
    height, width = max(5, crop[0]), max(4, crop[1])
    expected_image = np.full((height, width, 3), 127.5, np.float32)
    expected_image[:5, :4] = image
    expected_label = np.full((height, width, 1), 255, np.uint8)
    expected_label[:5, :4] = label
    for padded, padded_label in (pad_to_crop_array(image, label, crop),
                                 pad_to_crop_tf(image, label, crop)):
        np.testing.assert_array_equal(np.asarray(padded), expected_image)
        np.testing.assert_array_equal(np.asarray(padded_label), expected_label)
        assert np.asarray(padded).dtype == np.float32
    image_only, none = pad_to_crop_array(image, None, crop)
    np.testing.assert_array_equal(image_only, expected_image)
    assert none is None
