"""ImageNet classifier on an Xception backbone."""

import keras
from keras import layers

from deeplab_xception.backbones import XceptionBackbone  # noqa: F401  (registered, for from_config)


@keras.saving.register_keras_serializable(package="deeplab_xception")
class XceptionClassifier(keras.Model):
    """Backbone + global average pooling + a linear classifier.

    The classic variant ends like keras.applications.Xception (Dense
    "predictions"); the modified ones like the official DeepLab graph (dropout
    then a 1x1 conv "logits" with bias, 1001 classes with background at 0).
    `activation=None` returns logits, which is what training wants. The pooling
    runs in the backbone's dtype policy; the classifier layer and everything
    after it in float32.
    """

    def __init__(self, backbone, num_classes=1001, activation="softmax", dropout=0.5, **kwargs):
        self.backbone = backbone
        dtype = getattr(backbone, "layer_dtype", "float32")
        x = layers.GlobalAveragePooling2D(name="avg_pool", keepdims=backbone.variant != "xception",
                                          dtype=dtype)(backbone.output)
        if backbone.variant == "xception":
            outputs = layers.Dense(num_classes, activation=activation, name="predictions",
                                   dtype="float32")(x)
        else:
            x = layers.Dropout(dropout, name="prelogits_dropout", dtype=dtype)(x)
            x = layers.Conv2D(num_classes, 1, use_bias=True, name="logits", dtype="float32")(x)
            x = layers.Flatten(name="logits.flatten", dtype="float32")(x)
            outputs = layers.Activation(activation or "linear", name="predictions",
                                        dtype="float32")(x)
        super().__init__(inputs=backbone.input, outputs=outputs, name=kwargs.pop("name", "classifier"),
                         **kwargs)
        self.num_classes = num_classes
        self.activation = activation
        self.dropout = dropout

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "activation": self.activation,
            "dropout": self.dropout,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
