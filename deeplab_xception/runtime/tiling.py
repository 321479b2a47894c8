"""Sliding-window inference: images of any size in bounded memory, DeepLab's numerics per tile.

A pass (one scale, maybe flipped) needs the model's logits for the whole
scaled image. Tiled, they are the mean of the logits of overlapping tiles,
each tile run through the model on its own, so only one tile's activations
are alive at a time. Tile origins are multiples of the model's output stride,
so every tile samples the image on the whole image's grid, and each tile's
logits land on the whole image's logits grid: where a tile covers a logit's
whole receptive field, its value is the whole-image value, and the mean of
agreeing values is that value again. Means of logits, not of probabilities:
the per-scale softmax of DeepLab's multi-scale eval then runs on them as on
whole-image logits.

Resizes are align-corners bilinear as `layers.resize_align_corners` computes
them, written as two taps per output sample, so a block of rows can be
resized on its own, bit for bit as part of the whole.
"""

import numpy as np

from deeplab_xception.data.classes import EVAL_CROP_SIZES
from deeplab_xception.errors import ArgumentError

DEFAULT_TILE = EVAL_CROP_SIZES["voc"]  # 513 x 513
DEFAULT_OVERLAP = 1 / 3
# "auto" runs an image whole up to this many pixels (the largest official eval
# crop, Cityscapes' 1025 x 2049) and tiles larger ones.
AUTO_WHOLE_PIXELS = max(height * width for height, width in EVAL_CROP_SIZES.values())


def tile_option(tile):
    """"auto", None (whole image) or (height, width) from the forms the API and CLI accept:
    "auto", "off"/None, an int, or a pair."""
    if tile is None or (isinstance(tile, str) and tile in ("auto", "off")):
        return None if tile in (None, "off") else "auto"
    if isinstance(tile, str):
        raise ArgumentError("tile", f"must be 'auto', 'off' or a size, got {tile!r}")
    size = (tile, tile) if np.isscalar(tile) else tuple(tile)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ArgumentError("tile", f"must be 'auto', 'off' or positive (height, width), "
                                    f"got {tile!r}")
    return int(size[0]), int(size[1])


def align_corners_taps(out_size, in_size):
    """(lower, upper, weight) per output sample of an align-corners resize from `in_size`
    to `out_size` samples, in the float32 arithmetic of `layers.resize_align_corners`."""
    scale = np.float32(in_size - 1) / np.float32(max(out_size - 1, 1))
    source = np.arange(out_size, dtype=np.float32) * scale
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, source - lower.astype(np.float32)


def resize_axis(x, taps, axis, offset=0):
    """`x` resampled along `axis` by `taps` whose indices start at `offset` of the full axis."""
    lower, upper, weight = taps
    shape = [1] * x.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return (np.take(x, lower - offset, axis) * (1 - weight)
            + np.take(x, upper - offset, axis) * weight)


def _span(taps):
    """The input samples that `taps` read: (first, one past the last)."""
    return int(taps[0].min()), int(taps[1].max()) + 1


def _select(taps, index):
    return tuple(t[index] for t in taps)


class ScaledImages:
    """uint8 N x H x W x 3 images, preprocessed by `preprocess` (float32 arrays in and out),
    resized (align corners, rows then columns) to `size` and maybe flipped left-right;
    computed only for the crop asked for, so the whole scaled image never exists."""

    def __init__(self, images, size, preprocess, flip=False):
        self.images = images
        self.size = tuple(size)
        self.preprocess = preprocess
        self.flip = flip
        height, width = images.shape[1:3]
        self.resized = self.size != (height, width)
        self.row_taps = align_corners_taps(self.size[0], height)
        column_taps = align_corners_taps(self.size[1], width)
        self.column_taps = _select(column_taps, slice(None, None, -1)) if flip else column_taps

    def crop(self, top, left, height, width):
        rows, columns = slice(top, top + height), slice(left, left + width)
        if not self.resized:
            images = self.images[:, :, ::-1] if self.flip else self.images
            return self.preprocess(np.ascontiguousarray(images[:, rows, columns]))
        row_taps, column_taps = _select(self.row_taps, rows), _select(self.column_taps, columns)
        first, last = _span(row_taps)
        block = resize_axis(self.preprocess(self.images[:, first:last]), row_taps, 1, first)
        first, last = _span(column_taps)
        return resize_axis(block[:, :, first:last], column_taps, 2, first)


def tile_spans(size, tile, stride, align):
    """(start, length) of tiles covering 0..size: starts are multiples of `align`, evenly
    spread at most `stride` (+ align) apart; every tile is `tile` long but the last, which
    reaches `size` (less than `align` longer). One tile when `size` <= `tile`."""
    if size <= tile:
        return [(0, size)]
    count = -(-(size - tile) // stride) + 1
    starts = sorted({i * (size - tile) // (count - 1) // align * align for i in range(count)})
    return [(start, tile) for start in starts[:-1]] + [(starts[-1], size - starts[-1])]


class Tiling:
    """How a pass gets its logits: whole (tile None), tiled (a size), or by size ("auto").

    `overlap` is the fraction of a tile that its neighbour covers too; `align` the
    model's output stride (tile origins are multiples of it).
    """

    def __init__(self, tile="auto", overlap=DEFAULT_OVERLAP, align=16):
        if not 0 <= overlap < 1:
            raise ArgumentError("overlap", f"must be in [0, 1), got {overlap:g}")
        self.tile = tile_option(tile)
        if isinstance(self.tile, tuple) and min(self.tile) < 2 * align:
            raise ArgumentError("tile", f"{self.tile[0]}x{self.tile[1]} is smaller than twice "
                                        f"the output stride ({2 * align})")
        self.overlap = overlap
        self.align = align

    def tile_for(self, height, width):
        """The tile size for an image of `height` x `width`, or None to run it whole."""
        if self.tile == "auto":
            return DEFAULT_TILE if height * width > AUTO_WHOLE_PIXELS else None
        return self.tile

    def stride(self, tile):
        return max(self.align, int(tile * (1 - self.overlap)) // self.align * self.align)

    def spans(self, height, width):
        """(rows, columns) of the tiles for an image of `height` x `width`, or None: whole."""
        tile = self.tile_for(height, width)
        if tile is None:
            return None
        return (tile_spans(height, tile[0], self.stride(tile[0]), self.align),
                tile_spans(width, tile[1], self.stride(tile[1]), self.align))

    def count(self, height, width):
        """How many network calls an image of `height` x `width` takes."""
        spans = self.spans(height, width)
        return 1 if spans is None else len(spans[0]) * len(spans[1])

    def logits(self, logits_function, scaled, logits_stride, on_call=None):
        """N x ceil(h / stride) x ceil(w / stride) x C logits of the scaled images;
        `on_call()` after each network call (progress)."""
        height, width = scaled.size
        spans = self.spans(height, width)
        if spans is None:
            logits = np.asarray(logits_function(scaled.crop(0, 0, height, width)))
            if on_call:
                on_call()
            return logits
        rows, columns = spans
        grid = (-(-height // logits_stride), -(-width // logits_stride))
        total = None
        for top, tile_height in rows:
            for left, tile_width in columns:
                logits = np.asarray(logits_function(scaled.crop(top, left, tile_height, tile_width)))
                if on_call:
                    on_call()
                if total is None:
                    total = np.zeros((logits.shape[0], *grid, logits.shape[-1]), np.float32)
                r, c = top // logits_stride, left // logits_stride
                total[:, r:r + logits.shape[1], c:c + logits.shape[2]] += logits
        # In place: a second array the size of a pass would be the largest pass's peak.
        total /= _coverage(rows, columns, grid, logits_stride)[None, :, :, None]
        return total


def _coverage(rows, columns, grid, logits_stride):
    """How many tiles cover each logit: a product of per-axis counts on a grid of tiles."""
    counts = []
    for spans, size in zip((rows, columns), grid):
        count = np.zeros(size, np.float32)
        for start, length in spans:
            count[start // logits_stride:(start + length - 1) // logits_stride + 1] += 1
        counts.append(count)
    return counts[0][:, None] * counts[1][None, :]


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Pass:
    """One scale or flip of multi-scale eval: logits at the model's stride, resized as DeepLab
    does (to `intermediate`, flipped back, then to the image's size) one block of rows at a time."""

    def __init__(self, logits, intermediate, size, flipped):
        self.logits = logits
        self.flipped = flipped
        self.first_taps = [align_corners_taps(n, m) for n, m in zip(intermediate, logits.shape[1:3])]
        self.second_taps = [align_corners_taps(n, m) for n, m in zip(size, intermediate)]

    def probabilities(self, rows):
        """Softmax of the resized logits for output rows `rows` (a slice), all columns."""
        second_rows = _select(self.second_taps[0], rows)
        first, last = _span(second_rows)
        first_rows = _select(self.first_taps[0], slice(first, last))
        low, high = _span(first_rows)
        x = resize_axis(self.logits[:, low:high], first_rows, 1, low)
        x = resize_axis(x, self.first_taps[1], 2)
        if self.flipped:
            x = x[:, :, ::-1]
        x = resize_axis(x, second_rows, 1, first)
        return softmax(resize_axis(x, self.second_taps[1], 2))
