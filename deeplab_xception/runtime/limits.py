"""The largest image that may be segmented, checked before an image or its scaled copies
take the memory: a refusal by name instead of a process killed for memory."""

from deeplab_xception.errors import ArgumentError
from deeplab_xception.models.layers import scale_dimension

DEFAULT_MAX_PIXELS = 100_000_000


def check_pixel_limit(height, width, scales=(1.0,), max_pixels=DEFAULT_MAX_PIXELS, source=None):
    """Raises an ArgumentError (max_pixels) naming `source` when an image of `height` x `width`
    may not be segmented at `scales`."""
    if max_pixels is None:
        return
    where = f"{source}: " if source else ""
    limit = f"the limit of {max_pixels / 1e6:.3g} megapixels ({{argument}})"
    if height * width > max_pixels:
        raise ArgumentError("max_pixels", f"{where}{width}x{height} pixels "
                                          f"({height * width / 1e6:.3g} megapixels) exceed {limit}")
    for scale in scales:
        scaled = (scale_dimension(height, scale), scale_dimension(width, scale))
        if scaled[0] * scaled[1] > max_pixels:
            raise ArgumentError("max_pixels", f"{where}{width}x{height} pixels at scale {scale:g} become "
                                              f"{scaled[1]}x{scaled[0]} ({scaled[0] * scaled[1] / 1e6:.3g} "
                                              f"megapixels), more than {limit}")
