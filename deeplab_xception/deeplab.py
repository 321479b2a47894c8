"""DeepLabv3+ head: ASPP with image pooling, decoder at stride 4, logits.

The head reads only `backbone.output`, `backbone.output_stride` and
`backbone.pyramid_outputs[4]`, so it composes with any such encoder.
Layer names are the official scopes with '.' for '/'.
"""

import keras
from keras import layers

from deeplab_xception.layers import GlobalMeanPool, ResizeLike, dtype_policy_name

# Head batch norm of the released checkpoints (decay 0.9997, epsilon 1e-5).
BATCH_NORM = dict(momentum=0.9997, epsilon=1e-5)
ASPP_DEPTH = 256
DECODER_DEPTH = 256
PROJECTION_DEPTH = 48


def default_atrous_rates(output_stride):
    """(6, 12, 18) at output stride 16, scaled inversely with the stride."""
    return tuple(int(r * 16 // output_stride) for r in (6, 12, 18))


def _conv_bn_relu(x, filters, kernel_size, name, dtype, rate=1):
    x = layers.Conv2D(filters, kernel_size, dilation_rate=rate, padding="same",
                      use_bias=False, name=name, dtype=dtype)(x)
    x = layers.BatchNormalization(name=name + ".BatchNorm", dtype=dtype, **BATCH_NORM)(x)
    return layers.ReLU(name=name + ".relu", dtype=dtype)(x)


def _split_separable(x, filters, name, dtype, rate=1):
    """Depthwise 3x3 + BN + ReLU, then pointwise + BN + ReLU (official initializers)."""
    x = layers.DepthwiseConv2D(
        3, dilation_rate=rate, padding="same", use_bias=False, name=name + "_depthwise",
        depthwise_initializer=keras.initializers.TruncatedNormal(stddev=0.33), dtype=dtype)(x)
    x = layers.BatchNormalization(name=name + "_depthwise.BatchNorm", dtype=dtype, **BATCH_NORM)(x)
    x = layers.ReLU(name=name + "_depthwise.relu", dtype=dtype)(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=name + "_pointwise", dtype=dtype,
                      kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.06))(x)
    x = layers.BatchNormalization(name=name + "_pointwise.BatchNorm", dtype=dtype, **BATCH_NORM)(x)
    return layers.ReLU(name=name + "_pointwise.relu", dtype=dtype)(x)


def _aspp(features, atrous_rates, separable, dropout, dtype):
    pooled = GlobalMeanPool(name="image_pooling.mean", dtype=dtype)(features)
    pooled = _conv_bn_relu(pooled, ASPP_DEPTH, 1, "image_pooling", dtype)
    branches = [ResizeLike(name="image_pooling.resize", dtype=dtype)(pooled, features),
                _conv_bn_relu(features, ASPP_DEPTH, 1, "aspp0", dtype)]
    for i, rate in enumerate(atrous_rates, start=1):
        if separable:
            branches.append(_split_separable(features, ASPP_DEPTH, f"aspp{i}", dtype, rate))
        else:
            branches.append(_conv_bn_relu(features, ASPP_DEPTH, 3, f"aspp{i}", dtype, rate))
    x = layers.Concatenate(name="aspp.concat", dtype=dtype)(branches)
    x = _conv_bn_relu(x, ASPP_DEPTH, 1, "concat_projection", dtype)
    return layers.Dropout(dropout, name="concat_projection.dropout", dtype=dtype)(x)


def _decoder(x, low_level, separable, dtype):
    projection = _conv_bn_relu(low_level, PROJECTION_DEPTH, 1, "decoder.feature_projection0", dtype)
    x = ResizeLike(name="decoder.resize", dtype=dtype)(x, low_level)
    x = layers.Concatenate(name="decoder.concat", dtype=dtype)([x, projection])
    if separable:
        x = _split_separable(x, DECODER_DEPTH, "decoder.decoder_conv0", dtype)
        return _split_separable(x, DECODER_DEPTH, "decoder.decoder_conv1", dtype)
    for j in (1, 2):
        x = _conv_bn_relu(x, DECODER_DEPTH, 3, f"decoder.decoder_conv0.decoder_conv0_{j}", dtype)
    return x


@keras.saving.register_keras_serializable(package="deeplab_xception")
class DeepLabV3Plus(keras.Model):
    """DeepLabv3+ on an encoder; outputs per-pixel class logits.

    Output is at the input's size (align-corners bilinear) when
    `upsample_logits`, else at the logits' own stride (4 with the decoder).
    `atrous_rates=None` follows the backbone's output stride. `dtype` is the
    Keras dtype policy of the head's layers (default: the backbone's); the
    logits and their upsampling are always float32, so softmax, argmax and the
    loss never run in reduced precision.
    """

    LOGITS = "logits.semantic"  # the official `logits/semantic` scope

    def __init__(self, backbone, num_classes=21, atrous_rates=None, separable=True,
                 decoder=True, dropout=0.1, upsample_logits=True, dtype=None, **kwargs):
        if num_classes < 1:
            raise ValueError(f"num_classes: must be positive, got {num_classes}")
        if decoder and 4 not in backbone.pyramid_outputs:
            raise ValueError(f"decoder: backbone {backbone.name} has no stride-4 features")
        self.backbone = backbone
        dtype = dtype_policy_name(dtype or getattr(backbone, "layer_dtype", "float32"))
        rates = tuple(atrous_rates or default_atrous_rates(backbone.output_stride))
        x = _aspp(backbone.output, rates, separable, dropout, dtype)
        if decoder:
            x = _decoder(x, backbone.pyramid_outputs[4], separable, dtype)
        logits = layers.Conv2D(num_classes, 1, use_bias=True, name=self.LOGITS, dtype="float32",
                               kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01))(x)
        if upsample_logits:
            logits = ResizeLike(name="logits.resize", dtype="float32")(logits, backbone.input)
        super().__init__(inputs=backbone.input, outputs=logits,
                         name=kwargs.pop("name", "deeplabv3plus"), **kwargs)
        self.num_classes = num_classes
        self.atrous_rates = None if atrous_rates is None else rates
        self.separable = separable
        self.decoder = decoder
        self.dropout = dropout
        self.upsample_logits = upsample_logits
        self.layer_dtype = dtype

    @property
    def output_stride(self):
        return self.backbone.output_stride

    @property
    def logits_stride(self):
        return 4 if self.decoder else self.backbone.output_stride

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "atrous_rates": None if self.atrous_rates is None else list(self.atrous_rates),
            "separable": self.separable,
            "decoder": self.decoder,
            "dropout": self.dropout,
            "upsample_logits": self.upsample_logits,
            "dtype": self.layer_dtype,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["backbone"], dict):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
