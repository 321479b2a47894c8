"""Preprocessing and single- or multi-scale + flip prediction, as the official eval does it,
whole or in tiles (`tiling`)."""

import keras
import numpy as np

from deeplab_xception.data.preprocessing import preprocess_array
from deeplab_xception.errors import ArgumentError
from deeplab_xception.models.layers import scale_dimension
from deeplab_xception.runtime.compiled import compiled_call
from deeplab_xception.runtime.limits import DEFAULT_MAX_PIXELS, check_pixel_limit
from deeplab_xception.runtime.precision import resolve_precision
from deeplab_xception.runtime.tiling import DEFAULT_OVERLAP, Pass, ScaledImages, Tiling

BAND_VALUES = 1 << 22  # probabilities are computed in blocks of rows of about this many values


class Segmenter:
    """Class probabilities for images of any size from a DeepLabV3Plus.

    For each scale s the image is resized (align corners) to
    scale_dimension(H, s) x scale_dimension(W, s); the logits at their own
    stride are resized to scale_dimension(H, max(1, s) / stride), then to
    H x W; the result is the mean of the softmaxes over scales and flips.
    `tile` says how each scaled image gets its logits (see `tiling`): "auto"
    runs it whole up to `tiling.AUTO_WHOLE_PIXELS` and in 513 x 513 tiles
    above, "off" (or None) always whole, (h, w) in tiles of that size that
    overlap by `overlap`. Probabilities are computed a block of rows at a time,
    so `labels` never holds more than the logits of the passes and one block.
    Images (and their scaled sizes) over `max_pixels` are refused.
    The network computes in `precision` ("float32", "bfloat16" or "auto",
    what ran is `self.precision`); logits, resizes, softmax and the average
    over scales and flips are float32 in every precision. Tiling, resizes and
    the average are numpy, the same on every backend. The default here is
    float32, exact; the command line's is "auto" (bfloat16 on CPUs with AMX or
    AVX512_BF16).
    """

    def __init__(self, model, scales=(1.0,), flip=False, tile="auto", overlap=DEFAULT_OVERLAP,
                 max_pixels=DEFAULT_MAX_PIXELS, precision="float32"):
        if not scales or any(s <= 0 for s in scales):
            raise ArgumentError("scales", f"must be positive, got {' '.join(f'{s:g}' for s in scales)}")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.flip = flip
        self.max_pixels = max_pixels
        self.tiling = Tiling(tile, overlap, align=model.output_stride)
        self.requested_precision = precision
        self.logits_model = compiled_call(
            keras.Model(model.input, model.get_layer(model.LOGITS).output), precision,
            output_stride=model.output_stride)
        self.logits_stride = model.logits_stride
        self.on_call = None  # called after each network call, e.g. a progress bar's update

    @property
    def precision(self):
        """What the network computed in: "float32" or "bfloat16", "bfloat16 and float32" where
        `auto` chose per call size (a JAX GPU); before any call, what `auto` means here."""
        ran = self.logits_model.precisions
        return " and ".join(sorted(ran)) if ran else resolve_precision(self.requested_precision)

    def calls(self, height, width):
        """How many network calls (tiles, over scales and flips) one image of `height` x
        `width` takes: what a progress bar counts through `on_call`."""
        sizes = [(scale_dimension(height, s), scale_dimension(width, s)) for s in self.scales]
        return sum(self.tiling.count(*size) for size in sizes) * (1 + self.flip)

    def check_size(self, height, width):
        check_pixel_limit(height, width, self.scales, self.max_pixels)

    def passes(self, images):
        """One `tiling.Pass` per scale and flip of uint8 N x H x W x 3 `images`."""
        if np.ndim(images) != 4 or np.shape(images)[-1] != 3:
            hint = "; one image is images[None]" if np.ndim(images) == 3 else ""
            raise ArgumentError("images", f"expected a batch N x H x W x 3, got shape "
                                          f"{tuple(np.shape(images))}{hint}")
        height, width = int(images.shape[1]), int(images.shape[2])
        self.check_size(height, width)
        passes = []
        for scale in self.scales:
            size = (scale_dimension(height, scale), scale_dimension(width, scale))
            intermediate = (scale_dimension(height, max(1.0, scale) / self.logits_stride),
                            scale_dimension(width, max(1.0, scale) / self.logits_stride))
            for flipped in (False, True)[:1 + self.flip]:
                scaled = ScaledImages(images, size, preprocess_array, flipped)
                logits = self.tiling.logits(self.logits_model, scaled, self.logits_stride,
                                            self.on_call)
                passes.append(Pass(logits, intermediate, (height, width), flipped))
        return passes

    def bands(self, images):
        """(rows, N x rows x W x C probabilities) for blocks of rows from top to bottom."""
        passes = self.passes(images)
        count, height, width = (int(d) for d in images.shape[:3])
        step = max(1, BAND_VALUES // (count * width * self.model.num_classes))
        for top in range(0, height, step):
            rows = slice(top, min(top + step, height))
            yield rows, sum(p.probabilities(rows) for p in passes) / len(passes)

    def probabilities(self, images):
        """Batch of uint8 N x H x W x 3 images to float32 N x H x W x C probabilities."""
        return np.concatenate([band for _, band in self.bands(images)], axis=1)

    def labels(self, images, probabilities=None):
        """uint8 N x H x W labels; image i's H x W x C probabilities are also stored into
        `probabilities[i]` (an array or a memory-mapped .npy) when given."""
        labels = np.empty(images.shape[:3], np.uint8)
        for rows, band in self.bands(images):
            labels[:, rows] = band.argmax(axis=-1)
            for out, values in zip(() if probabilities is None else probabilities, band):
                out[rows] = values
        return labels
