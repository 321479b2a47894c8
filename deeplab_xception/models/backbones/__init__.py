from deeplab_xception.models.backbones.base import Backbone, ConfigModel, check_output_stride, copy_weights_by_name
from deeplab_xception.models.backbones.registry import (
    BACKBONES, build_backbone, reachable_output_strides, register_backbone)
from deeplab_xception.models.backbones.specs import (
    DEPTHWISE_LAYOUTS, KERAS_APPLICATIONS_VARIANT, VARIANTS, BlockSpec, VariantSpec)
from deeplab_xception.models.backbones.xception import XceptionBackbone, scope_name
