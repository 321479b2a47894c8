"""DeepLabv3+ head: ASPP with image pooling, decoder at stride 4, logits.

The head reads only `backbone.output`, `backbone.output_stride` and
`backbone.pyramid_outputs[4]`, so it composes with any such encoder.
Layer names are the official scopes with '.' for '/'.
"""

import keras
from keras import layers

from deeplab_xception.models.backbones.base import ConfigModel
from deeplab_xception.models.layers import (
    BATCH_NORM_MOMENTUM, HEAD_EPSILON, GlobalMeanPool, ResizeLike, dtype_policy_name, tag_section,
    truncated_normal)

ASPP_DEPTH = 256
DECODER_DEPTH = 256
PROJECTION_DEPTH = 48


PAPER_ATROUS_RATES = (6, 12, 18)  # at output stride 16


def scale_atrous_rates(rates, from_stride, to_stride):
    """Rates that cover the same image area at `to_stride` as `rates` at `from_stride`."""
    return tuple(int(r * from_stride // to_stride) for r in rates)


def default_atrous_rates(output_stride):
    """(6, 12, 18) at output stride 16, scaled inversely with the stride."""
    return scale_atrous_rates(PAPER_ATROUS_RATES, 16, output_stride)


def _batch_norm(x, name, options):
    return layers.BatchNormalization(name=name, epsilon=HEAD_EPSILON, momentum=options["momentum"],
                                     dtype=options["dtype"])(x)


def _conv_bn_relu(x, filters, kernel_size, name, options, rate=1):
    x = layers.Conv2D(filters, kernel_size, dilation_rate=rate, padding="same",
                      use_bias=False, name=name, dtype=options["dtype"])(x)
    x = _batch_norm(x, name + ".BatchNorm", options)
    return layers.ReLU(name=name + ".relu", dtype=options["dtype"])(x)


def _split_separable(x, filters, name, options, rate=1):
    """Depthwise 3x3 + BN + ReLU, then pointwise + BN + ReLU (official initializers)."""
    dtype = options["dtype"]
    x = layers.DepthwiseConv2D(
        3, dilation_rate=rate, padding="same", use_bias=False, name=name + "_depthwise",
        depthwise_initializer=truncated_normal(0.33), dtype=dtype)(x)
    x = _batch_norm(x, name + "_depthwise.BatchNorm", options)
    x = layers.ReLU(name=name + "_depthwise.relu", dtype=dtype)(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=name + "_pointwise", dtype=dtype,
                      kernel_initializer=truncated_normal(0.06))(x)
    x = _batch_norm(x, name + "_pointwise.BatchNorm", options)
    return layers.ReLU(name=name + "_pointwise.relu", dtype=dtype)(x)


def _aspp(features, atrous_rates, separable, dropout, options):
    dtype = options["dtype"]
    pooled = GlobalMeanPool(name="image_pooling.mean", dtype=dtype)(features)
    pooled = _conv_bn_relu(pooled, ASPP_DEPTH, 1, "image_pooling", options)
    branches = [ResizeLike(name="image_pooling.resize", dtype=dtype)(pooled, features),
                _conv_bn_relu(features, ASPP_DEPTH, 1, "aspp0", options)]
    for i, rate in enumerate(atrous_rates, start=1):
        if separable:
            branches.append(_split_separable(features, ASPP_DEPTH, f"aspp{i}", options, rate))
        else:
            branches.append(_conv_bn_relu(features, ASPP_DEPTH, 3, f"aspp{i}", options, rate))
    x = layers.Concatenate(name="aspp.concat", dtype=dtype)(branches)
    x = _conv_bn_relu(x, ASPP_DEPTH, 1, "concat_projection", options)
    return layers.Dropout(dropout, name="concat_projection.dropout", dtype=dtype)(x)


def _decoder(x, low_level, separable, options):
    projection = _conv_bn_relu(low_level, PROJECTION_DEPTH, 1, "decoder.feature_projection0", options)
    x = ResizeLike(name="decoder.resize", dtype=options["dtype"])(x, low_level)
    x = layers.Concatenate(name="decoder.concat", dtype=options["dtype"])([x, projection])
    if separable:
        x = _split_separable(x, DECODER_DEPTH, "decoder.decoder_conv0", options)
        return _split_separable(x, DECODER_DEPTH, "decoder.decoder_conv1", options)
    for j in (1, 2):
        x = _conv_bn_relu(x, DECODER_DEPTH, 3, f"decoder.decoder_conv0.decoder_conv0_{j}", options)
    return x


@keras.saving.register_keras_serializable(package="deeplab_xception")
class DeepLabV3Plus(ConfigModel):
    """DeepLabv3+ on an encoder; outputs per-pixel class logits.

    Output is at the input's size (align-corners bilinear) when
    `upsample_logits`, else at the logits' own stride (4 with the decoder).
    `atrous_rates=None` follows the backbone's output stride. `dtype` is the
    Keras dtype policy of the head's layers (default: the backbone's); the
    logits and their upsampling are always float32, so softmax, argmax and the
    loss never run in reduced precision. `batch_norm_momentum` defaults to the
    backbone's (else the checkpoints' 0.9997).
    """

    CONFIG = ("backbone", "num_classes", "atrous_rates", "separable", "decoder", "dropout",
              "upsample_logits", "batch_norm_momentum", "dtype")
    LOGITS = "logits.semantic"  # the official `logits/semantic` scope

    def __init__(self, backbone, num_classes=21, atrous_rates=None, separable=True,
                 decoder=True, dropout=0.1, upsample_logits=True, batch_norm_momentum=None,
                 dtype=None, **kwargs):
        if num_classes < 1:
            raise ValueError(f"num_classes: must be positive, got {num_classes}")
        if decoder and 4 not in backbone.pyramid_outputs:
            raise ValueError(f"decoder: backbone {backbone.name} has no stride-4 features")
        self.backbone = backbone
        dtype = dtype_policy_name(dtype or backbone.layer_dtype)
        momentum = batch_norm_momentum or getattr(backbone, "batch_norm_momentum",
                                                  BATCH_NORM_MOMENTUM)
        options = dict(dtype=dtype, momentum=momentum)
        rates = tuple(atrous_rates or default_atrous_rates(backbone.output_stride))
        x = _aspp(backbone.output, rates, separable, dropout, options)
        tag_section(backbone.output, x, "aspp")
        if decoder:
            low_level = backbone.pyramid_outputs[4]
            aspp = x
            x = _decoder(x, low_level, separable, options)
            tag_section([aspp, low_level], x, "decoder")
        head = [x]
        logits = layers.Conv2D(num_classes, 1, use_bias=True, name=self.LOGITS, dtype="float32",
                               kernel_initializer=truncated_normal(0.01))(x)
        if upsample_logits:
            logits = ResizeLike(name="logits.resize", dtype="float32")(logits, backbone.input)
            head.append(backbone.input)
        tag_section(head, logits, "logits")
        super().__init__(inputs=backbone.input, outputs=logits,
                         name=kwargs.pop("name", "deeplabv3plus"), **kwargs)
        self.num_classes = num_classes
        self.atrous_rates = None if atrous_rates is None else rates
        self.separable = separable
        self.decoder = decoder
        self.dropout = dropout
        self.upsample_logits = upsample_logits
        self.batch_norm_momentum = momentum
        self.layer_dtype = dtype

    @property
    def output_stride(self):
        return self.backbone.output_stride

    @property
    def logits_stride(self):
        return 4 if self.decoder else self.backbone.output_stride

    def config_at_output_stride(self, output_stride):
        """Explicit atrous rates rescaled to cover the same image area (6, 12, 18 at 16: 12, 24, 36 at 8)."""
        config = super().config_at_output_stride(output_stride)
        if self.atrous_rates is not None:
            config["atrous_rates"] = scale_atrous_rates(self.atrous_rates, self.output_stride,
                                                        output_stride)
        return config
