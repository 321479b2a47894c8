"""The model floor: layers, backbones, heads and `build_model`. It imports no data, training or
runtime code, so a model can be built, saved and loaded anywhere."""

from deeplab_xception.models.build import KINDS, build_model, with_output_stride  # noqa: F401
