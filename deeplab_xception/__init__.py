"""DeepLabv3+ with modified Xception backbones, in Keras 3."""

__version__ = "0.1.0"

from deeplab_xception.backbones import VARIANTS, XceptionBackbone
from deeplab_xception.classifier import XceptionClassifier
from deeplab_xception.deeplab import DeepLabV3Plus
from deeplab_xception.models import build_model, with_output_stride
from deeplab_xception.weights import load_model
