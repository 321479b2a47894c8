"""DeepLabv3+ with modified Xception backbones, in Keras 3.

The public names load on first use, so `import deeplab_xception.cli` can set
the environment (log levels, backend) before TensorFlow and Keras start.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "VARIANTS": "deeplab_xception.models.backbones",
    "Backbone": "deeplab_xception.models.backbones",
    "register_backbone": "deeplab_xception.models.backbones",
    "XceptionBackbone": "deeplab_xception.models.backbones",
    "XceptionClassifier": "deeplab_xception.models.classifier",
    "DeepLabV3Plus": "deeplab_xception.models.deeplab",
    "build_model": "deeplab_xception.models",
    "with_output_stride": "deeplab_xception.models",
    "load_model": "deeplab_xception.weights",
    "Segmenter": "deeplab_xception.runtime.segmenter",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'deeplab_xception' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
