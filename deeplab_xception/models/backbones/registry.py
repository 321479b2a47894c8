"""Backbones by name: every Xception variant, and whatever encoder family registers itself."""

from deeplab_xception.models.backbones.specs import VARIANTS
from deeplab_xception.models.backbones.xception import XceptionBackbone
from deeplab_xception.errors import ArgumentError

BACKBONES = {}  # name: (Backbone subclass, the constructor arguments the name fixes)


def register_backbone(name, cls, **fixed):
    """Makes `build_model(backbone=name)` build `cls(**fixed, **options)`."""
    BACKBONES[name] = (cls, fixed)


def _entry(name):
    if name not in BACKBONES:
        raise ArgumentError("backbone", f"unknown backbone {name!r}; choose one of "
                                        f"{', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def build_backbone(name, **options):
    """The backbone registered as `name`, built with `options` (output_stride, dtype, ...)."""
    cls, fixed = _entry(name)
    return cls(**fixed, **options)


def reachable_output_strides(name):
    """Output strides the backbone registered as `name` can be built at."""
    cls, fixed = _entry(name)
    return cls.reachable_output_strides(**fixed)


for _variant in VARIANTS:
    register_backbone(_variant, XceptionBackbone, variant=_variant)
