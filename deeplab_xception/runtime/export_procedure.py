"""`Segmenter`'s procedure as TensorFlow graph ops, for the exported files.

One image of any size in, labels (and probabilities) at its size out: per
scale the align-corners resize, the logits of overlapping tiles averaged,
the left-right flip, the mean of the softmaxes, the argmax. Every step is the
arithmetic of `tiling` and `inference` in the same float32 operations and
order, so a float32 export returns the labels `segment` writes. Tiles run in
a `tf.while_loop`, so one tile's activations are alive at a time, and the
graph is the same size for every number of tiles.
"""

from fractions import Fraction

import tensorflow as tf

from deeplab_xception.runtime.tiling import AUTO_WHOLE_PIXELS, DEFAULT_TILE, Tiling


def scaled_size(size, scale, dtype=tf.float64):
    """`layers.scale_dimension` in the graph: int((size - 1) * scale + 1) of an int32 scalar,
    in float64 as Python computes it, or in float32 for runtimes without float64 (TFLite),
    which gives the same integer where `exact_in_float32(scale)`."""
    scaled = tf.cast(size - 1, dtype) * tf.convert_to_tensor(scale, dtype) + tf.constant(1, dtype)
    return tf.cast(tf.floor(scaled), tf.int32)


def exact_in_float32(scale):
    """Whether (size - 1) * scale + 1 is exact in float32 for every size below 2^15: true
    for scales of few binary digits (0.5, 0.75, 1.25, ...)."""
    fraction = Fraction(scale)
    return fraction.denominator <= 2 ** 7 and fraction.numerator < 2 ** 8


def align_corners_taps(out_size, in_size):
    """`tiling.align_corners_taps` in the graph: (lower, upper, weight) per output sample."""
    scale = tf.cast(in_size - 1, tf.float32) / tf.cast(tf.maximum(out_size - 1, 1), tf.float32)
    source = tf.cast(tf.range(out_size), tf.float32) * scale
    lower = tf.minimum(tf.cast(tf.floor(source), tf.int32), in_size - 1)
    upper = tf.minimum(lower + 1, in_size - 1)
    return lower, upper, source - tf.cast(lower, tf.float32)


def resize_axis(x, taps, axis):
    """`x` (H x W x C) resampled along `axis` (0 or 1) by `taps`, as `tiling.resize_axis`."""
    lower, upper, weight = taps
    weight = tf.reshape(weight, [-1, 1, 1] if axis == 0 else [1, -1, 1])
    return (tf.gather(x, lower, axis=axis) * (1.0 - weight)
            + tf.gather(x, upper, axis=axis) * weight)


def resize(x, size):
    """Align-corners resize of H x W x C `x` to `size` (rows, columns), rows first."""
    x = resize_axis(x, align_corners_taps(size[0], tf.shape(x)[0]), 0)
    return resize_axis(x, align_corners_taps(size[1], tf.shape(x)[1]), 1)


def tile_spans(size, tile, stride, align):
    """`tiling.tile_spans` in the graph: (starts, lengths) of the tiles along one axis."""
    count = tf.where(size <= tile, 1, (size - tile + stride - 1) // stride + 1)
    index = tf.range(count)
    starts = index * (size - tile) // tf.maximum(count - 1, 1) // align * align
    starts, _ = tf.unique(tf.where(count > 1, starts, 0))  # sorted: unique keeps the order
    lengths = tf.concat([tf.fill([tf.size(starts) - 1], tile), [size - starts[-1]]], 0)
    return starts, lengths


def _coverage(starts, lengths, grid, logits_stride):
    """How many tiles cover each logit along one axis (float32), as `tiling._coverage`."""
    position = tf.expand_dims(tf.range(grid), 1)
    first = tf.expand_dims(starts // logits_stride, 0)
    last = tf.expand_dims((starts + lengths - 1) // logits_stride, 0)
    covered = tf.logical_and(position >= first, position <= last)
    return tf.reduce_sum(tf.cast(covered, tf.float32), axis=1)


class Procedure:
    """The graph function of one image: uint8 H x W x 3 -> (labels H x W, probabilities
    H x W x C float32), for `network` (preprocessed N x h x w x 3 float32 -> logits at
    `logits_stride`) and a `Tiling` as `Segmenter` takes it. Scaled sizes are computed in
    `size_dtype` (see `scaled_size`)."""

    def __init__(self, network, logits_stride, num_classes, scales=(1.0,), flip=False,
                 tiling=None, size_dtype=tf.float64):
        self.network = network
        self.size_dtype = size_dtype
        self.logits_stride = logits_stride
        self.num_classes = num_classes
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.tiling = tiling or Tiling()

    def _tile(self, height, width):
        """(tile height, tile width, stride along rows, along columns) for the graph: the
        image's own size where the tiling runs it whole."""
        tile = self.tiling.tile
        if tile is None:
            return height, width, height, width
        size = DEFAULT_TILE if tile == "auto" else tile
        strides = [self.tiling.stride(s) for s in size]
        if tile == "auto":
            whole = height * width <= AUTO_WHOLE_PIXELS
            return (tf.where(whole, height, size[0]), tf.where(whole, width, size[1]), *strides)
        return (*size, *strides)

    def logits(self, scaled):
        """The logits of preprocessed H x W x 3 `scaled` at `logits_stride`: the mean of its
        tiles' logits, one tile per loop iteration (`Tiling.logits`); without a loop where
        the image is known to run whole."""
        static = scaled.shape[:2]
        if self.tiling.tile is None or (None not in static and self.tiling.spans(*static) is None):
            return tf.cast(self.network(tf.expand_dims(scaled, 0))[0], tf.float32)
        height, width = tf.shape(scaled)[0], tf.shape(scaled)[1]
        tile_height, tile_width, row_stride, column_stride = self._tile(height, width)
        align = self.tiling.align
        rows = tile_spans(height, tile_height, row_stride, align)
        columns = tile_spans(width, tile_width, column_stride, align)
        grid = (-(-height // self.logits_stride), -(-width // self.logits_stride))
        count = tf.size(columns[0])

        def add_tile(index, total):
            row, column = index // count, index % count
            top, left = rows[0][row], columns[0][column]
            crop = scaled[top:top + rows[1][row], left:left + columns[1][column]]
            logits = tf.cast(self.network(tf.expand_dims(crop, 0))[0], tf.float32)
            r, c = top // self.logits_stride, left // self.logits_stride
            shape = tf.shape(logits)
            padding = [[r, grid[0] - r - shape[0]], [c, grid[1] - c - shape[1]], [0, 0]]
            return index + 1, total + tf.pad(logits, padding)

        total = tf.zeros([grid[0], grid[1], self.num_classes], tf.float32)
        _, total = tf.while_loop(lambda index, _: index < tf.size(rows[0]) * count, add_tile,
                                 (tf.constant(0), total), parallel_iterations=1)
        # [:, None] would be a strided slice with a new axis, which TFLite does not run.
        coverage = (tf.reshape(_coverage(*rows, grid[0], self.logits_stride), [-1, 1, 1])
                    * tf.reshape(_coverage(*columns, grid[1], self.logits_stride), [1, -1, 1]))
        return total / coverage

    def probabilities(self, preprocessed, scale, inner, flipped):
        """One pass's softmax at the image's size: the image resized by `scale` (maybe
        flipped), its logits resized to scale_dimension(size, `inner`), flipped back, resized
        to the image's size. Python values where the pass is known, tensors in the loop."""
        height, width = tf.shape(preprocessed)[0], tf.shape(preprocessed)[1]
        size = [scaled_size(n, scale, self.size_dtype) for n in (height, width)]
        intermediate = [scaled_size(n, inner, self.size_dtype) for n in (height, width)]
        # At scale 1 the resize is x * 1 + x' * 0, x exactly: skipped where known.
        known_one = isinstance(scale, float) and scale == 1.0
        scaled = preprocessed if known_one else resize(preprocessed, size)
        logits = resize(self.logits(_flip(scaled, flipped)), intermediate)
        logits = resize(_flip(logits, flipped), (height, width))
        shifted = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
        return shifted / tf.reduce_sum(shifted, axis=-1, keepdims=True)

    def __call__(self, image):
        """(labels int32 H x W, probabilities float32 H x W x C) of uint8 H x W x 3 `image`."""
        preprocessed = tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0  # preprocess_array
        passes = [(scale, max(1.0, scale) / self.logits_stride, flipped)
                  for scale in self.scales for flipped in (False, True)[:1 + self.flip]]
        if len(passes) == 1:
            probabilities = self.probabilities(preprocessed, *passes[0])
        else:  # one loop over the passes, so the network is in the graph once
            scales, inner, flips = (tf.constant(values, dtype) for values, dtype in zip(
                zip(*passes), (self.size_dtype, self.size_dtype, tf.bool)))

            def add_pass(index, total):
                return index + 1, total + self.probabilities(preprocessed, scales[index],
                                                             inner[index], flips[index])

            total = tf.zeros(tf.concat([tf.shape(image)[:2], [self.num_classes]], 0))
            _, total = tf.while_loop(lambda index, _: index < len(passes), add_pass,
                                     (tf.constant(0), total), parallel_iterations=1)
            probabilities = total / float(len(passes))
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32), probabilities


def _flip(x, flipped):
    """`x` (H x W x C) mirrored left-right where `flipped` (a bool or a bool tensor)."""
    if isinstance(flipped, bool):
        return tf.reverse(x, [1]) if flipped else x
    return tf.where(flipped, tf.reverse(x, [1]), x)
