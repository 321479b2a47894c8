"""The input contract every model of the package shares, written once.

The official DeepLab and Xception checkpoints were trained on RGB scaled to
[-1, 1] (x * 2/255 - 1), so the mean pixel 127.5 maps to 0 and is what crops
are padded with; label 255 marks pixels that neither loss nor metrics count.
ImageNet classifiers are evaluated on the central 87.5% of the image resized
to 299 x 299, as the Inception evaluation does.
"""

from keras import ops

MEAN_PIXEL = 127.5
IGNORE_LABEL = 255
CLASSIFIER_IMAGE_SIZE = 299
CENTRAL_FRACTION = 0.875
# How weights trained on this contract describe their input (the zoo records it per weight).
INCEPTION = "RGB, x * 2/255 - 1 (mean pixel 127.5 maps to 0)"


def preprocess(images):
    """RGB in [0, 255], any dtype, to the models' input range [-1, 1]: x * 2/255 - 1."""
    return ops.cast(images, "float32") * (2.0 / 255.0) - 1.0


def classifier_eval_image(image, size=CLASSIFIER_IMAGE_SIZE, central_fraction=CENTRAL_FRACTION):
    """One H x W x 3 image as a classifier is evaluated: the central `central_fraction`
    of it, bilinearly resized to size x size, preprocessed."""
    image = tf.image.central_crop(image, central_fraction)
    image = tf.image.resize(image, (size, size))
    image.set_shape((size, size, 3))
    return preprocess(image)
