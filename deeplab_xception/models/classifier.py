"""ImageNet classifier on an Xception backbone."""

import keras
from keras import layers

from deeplab_xception.models.backbones.base import ConfigModel
from deeplab_xception.models.backbones.xception import XceptionBackbone  # noqa: F401  (registered, for from_config)
from deeplab_xception.models.layers import tag_section


@keras.saving.register_keras_serializable(package="deeplab_xception")
class XceptionClassifier(ConfigModel):
    """Backbone + global average pooling + a linear classifier.

    The variant's `classifier_head` decides the ending: "dense" like
    keras.applications.Xception (Dense "predictions"), "conv_logits" like the
    official DeepLab graph (dropout then a 1x1 conv "logits" with bias).
    `num_classes=None` is the variant's ImageNet classes (1000, or slim's 1001
    with background at 0). `activation=None` returns logits, which is what
    training wants. The pooling runs in the backbone's dtype policy; the
    classifier layer and everything after it in float32.
    """

    CONFIG = ("backbone", "num_classes", "activation", "dropout")

    def __init__(self, backbone, num_classes=None, activation="softmax", dropout=0.5, **kwargs):
        self.backbone = backbone
        spec = getattr(backbone, "spec", None)  # other encoders: slim's head, classes given
        num_classes = num_classes or (spec.imagenet_classes if spec else None)
        if not num_classes or num_classes < 1:
            raise ValueError(f"num_classes: must be positive, got {num_classes}")
        dtype = backbone.layer_dtype
        dense = spec is not None and spec.classifier_head == "dense"
        x = layers.GlobalAveragePooling2D(name="avg_pool", keepdims=not dense, dtype=dtype)(backbone.output)
        if dense:
            outputs = layers.Dense(num_classes, activation=activation, name="predictions",
                                   dtype="float32")(x)
        else:
            x = layers.Dropout(dropout, name="prelogits_dropout", dtype=dtype)(x)
            x = layers.Conv2D(num_classes, 1, use_bias=True, name="logits", dtype="float32")(x)
            x = layers.Flatten(name="logits.flatten", dtype="float32")(x)
            outputs = layers.Activation(activation or "linear", name="predictions",
                                        dtype="float32")(x)
        tag_section(backbone.output, outputs, "logits")
        super().__init__(inputs=backbone.input, outputs=outputs, name=kwargs.pop("name", "classifier"),
                         **kwargs)
        self.num_classes = num_classes
        self.activation = activation
        self.dropout = dropout
