"""Inception-style ImageNet preprocessing: a random distorted crop for training, a central crop for eval.

Both end in the models' input range (`deeplab_xception.data.preprocessing`).
"""

import tensorflow as tf

from deeplab_xception.data.preprocessing import CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE, preprocess

# The crop distribution of Inception's training preprocessing.
MIN_OBJECT_COVERED = 0.1
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
AREA_RANGE = (0.08, 1.0)
MAX_ATTEMPTS = 100


def decode(encoded):
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def train_image(encoded, size):
    """A random crop covering 8% to 100% of the image, flipped at random, resized to size x size."""
    image = decode(encoded)
    begin, crop_size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        min_object_covered=MIN_OBJECT_COVERED, aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE, max_attempts=MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.random_flip_left_right(image)
    image = tf.image.resize(image, (size, size))
    image.set_shape((size, size, 3))
    return preprocess(image)


def classifier_eval_image(image, size=CLASSIFIER_IMAGE_SIZE, central_fraction=CENTRAL_FRACTION):
    """One H x W x 3 image as a classifier is evaluated: the central `central_fraction`
    of it, bilinearly resized to size x size, preprocessed."""
    image = tf.image.central_crop(image, central_fraction)
    image = tf.image.resize(image, (size, size))
    image.set_shape((size, size, 3))
    return preprocess(image)


def eval_image(encoded, size, central_fraction):
    """The central `central_fraction` of the image, resized to size x size."""
    return classifier_eval_image(decode(encoded), size, central_fraction)
