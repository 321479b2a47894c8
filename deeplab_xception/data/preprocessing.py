"""The input contract every model of the package shares, written once.

The official DeepLab and Xception checkpoints were trained on RGB scaled to
[-1, 1] (x * 2/255 - 1), so the mean pixel 127.5 maps to 0 and is what crops
are padded with; label 255 marks pixels that neither loss nor metrics count.
ImageNet classifiers are evaluated on the central 87.5% of the image resized
to 299 x 299, as the Inception evaluation does.
"""

import cv2
import numpy as np
from keras import ops

from deeplab_xception.backend import import_tensorflow

MEAN_PIXEL = 127.5
IGNORE_LABEL = 255
CLASSIFIER_IMAGE_SIZE = 299
CENTRAL_FRACTION = 0.875
# How weights trained on this contract describe their input (the zoo records it per weight).
INCEPTION = "RGB, x * 2/255 - 1 (mean pixel 127.5 maps to 0)"


def preprocess(images):
    """RGB in [0, 255], any dtype, to the models' input range [-1, 1]: x * 2/255 - 1."""
    return ops.cast(images, "float32") * (2.0 / 255.0) - 1.0


def preprocess_array(images):
    """`preprocess` in numpy, float32 in and out: for inference, whatever the backend."""
    return np.asarray(images, np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _crop_padding(shape, crop_size, rank):
    """Bottom/right padding of each axis up to the crop's height and width (none past it)."""
    return ([(0, max(crop_size[0] - shape[0], 0)), (0, max(crop_size[1] - shape[1], 0))]
            + [(0, 0)] * (rank - 2))


def pad_to_crop_array(image, label, crop_size):
    """(float32 image, label) padded bottom and right to at least `crop_size` (height, width), as
    the official input pipeline pads: the image with the mean pixel, the label (None: none) with
    the ignore label; never cropped. In numpy, for inference and input without TensorFlow."""
    image = np.asarray(image, np.float32)
    image = np.pad(image, _crop_padding(image.shape, crop_size, image.ndim),
                   constant_values=MEAN_PIXEL)
    if label is not None:
        label = np.pad(label, _crop_padding(label.shape, crop_size, label.ndim),
                       constant_values=IGNORE_LABEL)
    return image, label


def pad_to_crop_tf(image, label, crop_size):
    """`pad_to_crop_array` in TensorFlow ops, for tf.data: shapes known only per example, and
    graphs that run on remote workers, whatever Keras' backend."""
    tf = import_tensorflow()
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    padding = [[0, tf.maximum(crop_size[0] - shape[0], 0)],
               [0, tf.maximum(crop_size[1] - shape[1], 0)]]
    image = tf.pad(image, padding + [[0, 0]], constant_values=MEAN_PIXEL)
    label = tf.pad(label, padding + [[0, 0]] * (len(label.shape) - 2), constant_values=IGNORE_LABEL)
    return image, label


def central_crop_box(height, width, central_fraction=CENTRAL_FRACTION):
    """(top, left, height, width) of the central crop, rounded as tf.image.central_crop does."""
    top = int((height - height * central_fraction) / 2)
    left = int((width - width * central_fraction) / 2)
    return top, left, height - 2 * top, width - 2 * left


def classifier_eval_array(image, size=CLASSIFIER_IMAGE_SIZE, central_fraction=CENTRAL_FRACTION):
    """One uint8 H x W x 3 image as a classifier is evaluated, in numpy and OpenCV (what
    `classify` runs on any backend): the central `central_fraction` of it, bilinearly
    resized (half-pixel centers, no antialiasing, as tf.image.resize) to size x size,
    preprocessed. The pretraining evaluator computes the same in tf.data
    (`pretrain.preprocessing.eval_image`)."""
    top, left, height, width = central_crop_box(*image.shape[:2], central_fraction)
    crop = np.asarray(image[top:top + height, left:left + width], np.float32)
    return preprocess_array(cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR))
