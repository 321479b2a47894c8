from deeplab_xception.backbones.specs import DEPTHWISE_LAYOUTS, VARIANTS, BlockSpec, VariantSpec
from deeplab_xception.backbones.xception import XceptionBackbone, reachable_output_strides, scope_name
