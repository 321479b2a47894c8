"""DeepLab's training augmentation in numpy, for input pipelines without TensorFlow.

The same contract as `segment.augment` (the tf.data version), step for step:
random scale (bilinear image, nearest label, both align corners, as TF1's
resize kernels compute them in float32), pad bottom and right to the crop
with the mean pixel and the ignore label, random crop, random left-right flip.
Given the same scale, crop offset and flip, both give the same image (to float
rounding) and the same labels; tests/test_jax_training.py holds them to it.
"""

import numpy as np

from deeplab_xception.data.preprocessing import pad_to_crop_array, preprocess_array


def _align_corners_scale(in_size, out_size):
    """TF1's source step per output pixel with align_corners, in float32."""
    if out_size > 1:
        return np.float32(in_size - 1) / np.float32(out_size - 1)
    return np.float32(in_size) / np.float32(out_size)


def _sources(in_size, out_size):
    """Source coordinates of each output pixel, as TF's kernels compute them (float32)."""
    return np.arange(out_size, dtype=np.float32) * _align_corners_scale(in_size, out_size)


def resize_bilinear(image, size):
    """float32 H x W x C resized to `size` as tf.compat.v1.image.resize_bilinear(align_corners=True)."""
    height, width = image.shape[:2]
    rows, cols = _sources(height, size[0]), _sources(width, size[1])
    top = np.floor(rows).astype(np.int64)
    bottom = np.minimum(np.ceil(rows).astype(np.int64), height - 1)
    left = np.floor(cols).astype(np.int64)
    right = np.minimum(np.ceil(cols).astype(np.int64), width - 1)
    y_lerp = (rows - top.astype(np.float32))[:, None, None]
    x_lerp = (cols - left.astype(np.float32))[None, :, None]
    image = image.astype(np.float32, copy=False)
    upper, lower = image[top], image[bottom]
    top_row = upper[:, left] + (upper[:, right] - upper[:, left]) * x_lerp
    bottom_row = lower[:, left] + (lower[:, right] - lower[:, left]) * x_lerp
    return top_row + (bottom_row - top_row) * y_lerp


def resize_nearest(label, size):
    """H x W labels resized to `size` as TF1's resize_nearest_neighbor(align_corners=True):
    the source index rounded half away from zero."""
    height, width = label.shape[:2]
    rows = np.minimum(np.floor(_sources(height, size[0]).astype(np.float64) + 0.5), height - 1)
    cols = np.minimum(np.floor(_sources(width, size[1]).astype(np.float64) + 0.5), width - 1)
    return label[rows.astype(np.int64)][:, cols.astype(np.int64)]


def scaled_size(shape, scale):
    """(height, width) * scale rounded half to even in float32, as tf.round does."""
    return tuple(int(v) for v in np.round(np.asarray(shape[:2], np.float32) * np.float32(scale)))


def scale_and_pad(image, label, crop_size, scale=None):
    """uint8 image H x W x 3 and label H x W to float32 and uint8 arrays at least the crop's size:
    scaled by `scale` (None: not resized), then padded bottom and right."""
    image = image.astype(np.float32)
    if scale is not None:
        size = scaled_size(image.shape, scale)
        image, label = resize_bilinear(image, size), resize_nearest(label, size)
    return pad_to_crop_array(image, label, crop_size)


def crop_and_flip(image, label, crop_size, offset, flip):
    """The crop at `offset` (top, left), mirrored left-right when `flip`: a preprocessed
    float32 image and int32 labels."""
    top, left = offset
    image = image[top:top + crop_size[0], left:left + crop_size[1]]
    label = label[top:top + crop_size[0], left:left + crop_size[1]]
    if flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return preprocess_array(image), label.astype(np.int32)


def random_scale_factor(rng, min_scale, max_scale, step):
    """Uniform in [min, max]; with `step` > 0, one of min, min + step, ..., max."""
    if step > 0:
        count = int(round((max_scale - min_scale) / step)) + 1
        return float(np.float32(min_scale) + np.float32(step) * np.float32(rng.integers(count)))
    return float(rng.uniform(min_scale, max_scale))


def train_augment(image, label, crop_size, rng, min_scale=0.5, max_scale=2.0, scale_step=0.25,
                  flip=True):
    """uint8 image H x W x 3 and label H x W to a preprocessed crop and int32 labels, with
    the random choices drawn from `rng` (a numpy Generator)."""
    scale = (None if (min_scale, max_scale) == (1.0, 1.0)
             else random_scale_factor(rng, min_scale, max_scale, scale_step))
    image, label = scale_and_pad(image, label, crop_size, scale)
    offset = (int(rng.integers(image.shape[0] - crop_size[0] + 1)),
              int(rng.integers(image.shape[1] - crop_size[1] + 1)))
    return crop_and_flip(image, label, crop_size, offset, bool(flip and rng.random() < 0.5))


def eval_pad(image, label, crop_size):
    """Pads (mean pixel, ignore label) to `crop_size` and keeps its top-left window, as
    `segment.augment.eval_pad`: a preprocessed image and int32 labels."""
    image, label = scale_and_pad(image, label, crop_size)
    return crop_and_flip(image, label, crop_size, (0, 0), False)
