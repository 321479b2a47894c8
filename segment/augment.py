"""DeepLab's training augmentation, in TensorFlow ops for tf.data.

Order as in the official input pipeline: random scale (bilinear image,
nearest label, both align corners), pad to the crop with the mean pixel and
the ignore label, random crop, random left-right flip.
"""

import tensorflow as tf

from deeplab_xception.data.preprocessing import pad_to_crop_tf, preprocess


def random_scale_factor(min_scale, max_scale, step):
    """Uniform in [min, max]; with `step` > 0, one of min, min + step, ..., max."""
    if step > 0:
        count = int(round((max_scale - min_scale) / step)) + 1
        return min_scale + step * tf.cast(tf.random.uniform((), 0, count, tf.int32), tf.float32)
    return tf.random.uniform((), min_scale, max_scale)


def scale_and_pad(image, label, crop_size, scale=None):
    """float32 image H x W x 3 and label H x W x 1, scaled by `scale` (None: not resized;
    bilinear image, nearest label, both align corners), then padded bottom and right up
    to the crop size: mean pixel for the image, ignore for the label."""
    if scale is not None:
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32)
        image = tf.compat.v1.image.resize(image, size, tf.image.ResizeMethod.BILINEAR,
                                          align_corners=True)
        label = tf.compat.v1.image.resize(label, size, tf.image.ResizeMethod.NEAREST_NEIGHBOR,
                                          align_corners=True)
    return pad_to_crop_tf(image, label, crop_size)


def crop_and_flip(image, label, crop_size, offset, flip):
    """The crop at `offset` (top, left), mirrored left-right when `flip` (a boolean tensor):
    a preprocessed image and int32 labels H x W."""
    crop_height, crop_width = crop_size
    stacked = tf.concat([image, tf.cast(label, tf.float32)], axis=-1)
    stacked = tf.slice(stacked, tf.stack([offset[0], offset[1], 0]), (crop_height, crop_width, 4))
    stacked = tf.cond(flip, lambda: tf.reverse(stacked, axis=[1]), lambda: stacked)
    image, label = stacked[..., :3], tf.cast(stacked[..., 3], tf.int32)
    return preprocess(image), label


def train_augment(image, label, crop_size, min_scale=0.5, max_scale=2.0, scale_step=0.25,
                  flip=True):
    """uint8 image H x W x 3 and label H x W x 1 to a preprocessed crop and int32 labels."""
    scale = (None if (min_scale, max_scale) == (1.0, 1.0)
             else random_scale_factor(min_scale, max_scale, scale_step))
    image, label = scale_and_pad(tf.cast(image, tf.float32), label, crop_size, scale)
    # Uniform offsets over the valid range, drawn as tf.image.random_crop draws them.
    limit = tf.shape(image)[:2] - tf.constant(crop_size, tf.int32) + 1
    offset = tf.random.uniform((2,), maxval=tf.int32.max, dtype=tf.int32) % limit
    mirror = tf.logical_and(tf.constant(bool(flip)), tf.random.uniform(()) < 0.5)
    return crop_and_flip(image, label, crop_size, offset, mirror)


def eval_pad(image, label, crop_size):
    """Pads (mean pixel, ignore label) to `crop_size` and keeps its top-left window."""
    crop_height, crop_width = crop_size
    image, label = scale_and_pad(tf.cast(image, tf.float32), label, crop_size)
    image = tf.ensure_shape(image[:crop_height, :crop_width], (crop_height, crop_width, 3))
    label = tf.ensure_shape(label[:crop_height, :crop_width, 0], (crop_height, crop_width))
    return preprocess(image), tf.cast(label, tf.int32)
