"""Building models by name: the entry point for code that does not want the classes."""

import keras

from deeplab_xception.backbones import XceptionBackbone
from deeplab_xception.classifier import XceptionClassifier
from deeplab_xception.deeplab import DeepLabV3Plus

TASKS = ("deeplab", "classifier", "backbone")


def build_model(task="deeplab", backbone="xception_65", output_stride=None, num_classes=None,
                multi_grid=None, depthwise_layout="checkpoint", input_shape=(None, None, 3),
                batch_norm_momentum=None, dtype="float32", **head_options):
    """An untrained model.

    task="deeplab": DeepLabv3+ (output stride 16 and 21 classes by default;
    head options: atrous_rates, separable, decoder, dropout, upsample_logits).
    task="classifier": ImageNet classifier (output stride 32, 1001 classes for
    the modified variants, 1000 for "xception").
    task="backbone": the bare feature extractor.
    `batch_norm_momentum` overrides the checkpoints' 0.9997 on every batch norm:
    short runs need moving statistics that catch up within their few steps.
    `dtype` is the Keras dtype policy of every layer ("float32",
    "mixed_bfloat16", "mixed_float16"); weights stay float32 under the mixed
    policies, and logits are always float32.
    """
    if task not in TASKS:
        raise ValueError(f"task: {task!r} is not one of {TASKS}")
    if output_stride is None:
        output_stride = 16 if task == "deeplab" else 32
    encoder = XceptionBackbone(backbone, output_stride=output_stride, multi_grid=multi_grid,
                               depthwise_layout=depthwise_layout, input_shape=input_shape,
                               dtype=dtype)
    if task == "backbone":
        model = encoder
    elif task == "classifier":
        if num_classes is None:
            num_classes = 1000 if backbone == "xception" else 1001
        model = XceptionClassifier(encoder, num_classes=num_classes, **head_options)
    else:
        model = DeepLabV3Plus(encoder, num_classes=21 if num_classes is None else num_classes,
                              **head_options)
    if batch_norm_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = batch_norm_momentum
    return model


def with_output_stride(model, output_stride):
    """The same DeepLabv3+ (same weights) running at another output stride.

    Explicit atrous rates are rescaled so they keep covering the same image
    area (6, 12, 18 at 16 become 12, 24, 36 at 8), as the paper evaluates.
    """
    config = model.get_config()
    backbone_config = dict(config["backbone"]["config"], output_stride=output_stride)
    backbone = XceptionBackbone.from_config(backbone_config)
    rates = config["atrous_rates"]
    if rates is not None:
        rates = [int(r * model.output_stride // output_stride) for r in rates]
    rebuilt = DeepLabV3Plus.from_config(
        dict(config, backbone=backbone, atrous_rates=rates))
    rebuilt.set_weights(model.get_weights())
    return rebuilt
