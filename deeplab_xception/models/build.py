"""Building models by name: the entry point for code that does not want the classes."""

from deeplab_xception.models.backbones import Backbone, build_backbone, reachable_output_strides
from deeplab_xception.models.classifier import XceptionClassifier
from deeplab_xception.models.deeplab import DeepLabV3Plus
from deeplab_xception.errors import ArgumentError

KINDS = ("deeplab", "classifier", "backbone")
HEADS = {"deeplab": DeepLabV3Plus, "classifier": XceptionClassifier}


def default_output_stride(kind, backbone):
    """16 for DeepLab, 32 otherwise, or the nearest the backbone reaches."""
    wanted = 16 if kind == "deeplab" else 32
    reachable = reachable_output_strides(backbone)
    return wanted if wanted in reachable else min(reachable, key=lambda s: abs(s - wanted))


def build_model(kind="deeplab", backbone="xception_65", output_stride=None, num_classes=None,
                multi_grid=None, depthwise_layout=None, input_shape=(None, None, 3),
                batch_norm_momentum=None, dtype="float32", **head_options):
    """An untrained model of `kind` on the backbone registered as `backbone`.

    kind="deeplab": DeepLabv3+ (output stride 16 and 21 classes by default;
    head options: atrous_rates, separable, decoder, dropout, upsample_logits).
    kind="classifier": ImageNet classifier (output stride 32, the variant's
    ImageNet classes by default; head options: activation, dropout).
    kind="backbone": the bare feature extractor.
    `multi_grid` and `depthwise_layout` are Xception options, passed on when given.
    `batch_norm_momentum` replaces the checkpoints' 0.9997 on every batch norm:
    short runs need moving statistics that catch up within their few steps.
    `dtype` is the Keras dtype policy of every layer ("float32",
    "mixed_bfloat16", "mixed_float16"); weights stay float32 under the mixed
    policies, and logits are always float32.
    """
    if "task" in head_options:
        raise TypeError("build_model: the model kind is now the `kind` argument, not `task`")
    if kind not in KINDS:
        raise ArgumentError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    encoder_options = {key: value for key, value in (
        ("multi_grid", multi_grid), ("depthwise_layout", depthwise_layout),
        ("batch_norm_momentum", batch_norm_momentum)) if value is not None}
    encoder = build_backbone(
        backbone, output_stride=output_stride or default_output_stride(kind, backbone),
        input_shape=input_shape, dtype=dtype, **encoder_options)
    if kind == "backbone":
        return encoder
    head = HEADS[kind]
    # keras.Model would swallow an option the head does not take.
    for name in sorted(set(head_options) - set(head.CONFIG) - {"name"}):
        raise ArgumentError(name, f"a {kind} model takes no {name} option")
    if kind == "deeplab" and num_classes is None:
        num_classes = 21
    return head(encoder, num_classes=num_classes, **head_options)


def with_output_stride(model, output_stride):
    """The same model (weights copied by layer name) running at another output stride.

    Works for a backbone and for any head on one; a DeepLabv3+ with explicit
    atrous rates rescales them to cover the same image area, as the paper evaluates.
    """
    if not isinstance(model, Backbone) and not isinstance(getattr(model, "backbone", None), Backbone):
        raise ArgumentError("model", f"{model.name} is not built on a Backbone")
    return model.with_output_stride(output_stride)
