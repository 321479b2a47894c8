"""The one builder for every Xception variant in `specs.VARIANTS`."""

import dataclasses

import keras
from keras import layers

from deeplab_xception.models.backbones.base import Backbone, check_output_stride
from deeplab_xception.models.backbones.specs import DEPTHWISE_LAYOUTS, VARIANTS
from deeplab_xception.models.layers import (
    BACKBONE_EPSILON, BATCH_NORM_MOMENTUM, dtype_policy_name, fixed_padding, tag_section,
    truncated_normal)

# Official xception_arg_scope initializes every backbone conv this way.
INITIALIZER_STDDEV = 0.09


def scope_name(scope):
    """Keras layer names cannot hold '/', so official scopes are spelled with '.'."""
    return scope.replace("/", ".")


def _initializer():
    return truncated_normal(INITIALIZER_STDDEV)


@dataclasses.dataclass(frozen=True)
class _Build:
    """What every layer of one build shares."""
    dtype: str
    momentum: float
    layout: str


def _batch_norm(x, name, build, epsilon=BACKBONE_EPSILON):
    return layers.BatchNormalization(name=name, epsilon=epsilon, momentum=build.momentum,
                                     dtype=build.dtype)(x)


def _conv_same(x, filters, kernel_size, stride, rate, name, build, depthwise=False):
    """TF-slim conv2d_same: SAME when unstrided, explicit padding + VALID when strided."""
    padding = "same"
    if stride > 1:
        x = layers.ZeroPadding2D(fixed_padding(kernel_size, rate), name=name + ".pad",
                                 dtype=build.dtype)(x)
        padding = "valid"
    if depthwise:
        return layers.DepthwiseConv2D(
            kernel_size, strides=stride, dilation_rate=rate, padding=padding,
            use_bias=False, depthwise_initializer=_initializer(), name=name, dtype=build.dtype)(x)
    return layers.Conv2D(
        filters, kernel_size, strides=stride, dilation_rate=rate, padding=padding,
        use_bias=False, kernel_initializer=_initializer(), name=name, dtype=build.dtype)(x)


def _modified_stem(x, build):
    for name, filters, stride in (("entry_flow.conv1_1", 32, 2), ("entry_flow.conv1_2", 64, 1)):
        x = _conv_same(x, filters, 3, stride, 1, name, build)
        x = _batch_norm(x, name + ".BatchNorm", build)
        x = layers.ReLU(name=name + ".relu", dtype=build.dtype)(x)
    return x


def _modified_unit(x, block, prefix, stride, rate, unit_rates, build, first_unit):
    """DeepLab's xception_module: three separable convs, the stride on the last.

    Returns the unit's output and its last feature map before the stride (the
    BN output feeding the last separable conv: DeepLab's decoder tap).
    """
    del first_unit  # DeepLab applies the leading ReLU in every unit.
    dtype = build.dtype
    residual = x
    last = len(block.depths) - 1
    for i, depth in enumerate(block.depths):
        if i == last:
            before_stride = residual
        name = f"{prefix}.separable_conv{i + 1}"
        if not block.activation_inside:
            residual = layers.ReLU(name=name + ".relu_in", dtype=dtype)(residual)
        residual = _conv_same(residual, None, 3, stride if i == last else 1,
                              rate * unit_rates[i], name + "_depthwise", build, depthwise=True)
        if build.layout != "plain":
            residual = _batch_norm(residual, name + "_depthwise.BatchNorm", build)
        if build.layout == "paper" or (build.layout == "checkpoint" and block.activation_inside):
            residual = layers.ReLU(name=name + "_depthwise.relu", dtype=dtype)(residual)
        residual = layers.Conv2D(depth, 1, use_bias=False, kernel_initializer=_initializer(),
                                 name=name + "_pointwise", dtype=dtype)(residual)
        residual = _batch_norm(residual, name + "_pointwise.BatchNorm", build)
        if block.activation_inside:
            residual = layers.ReLU(name=name + "_pointwise.relu", dtype=dtype)(residual)
    if block.skip == "conv":
        shortcut = layers.Conv2D(block.depths[-1], 1, strides=stride, padding="same",
                                 use_bias=False, kernel_initializer=_initializer(),
                                 name=prefix + ".shortcut", dtype=dtype)(x)
        shortcut = _batch_norm(shortcut, prefix + ".shortcut.BatchNorm", build)
        return layers.Add(name=prefix + ".add", dtype=dtype)([residual, shortcut]), before_stride
    if block.skip == "sum":
        return layers.Add(name=prefix + ".add", dtype=dtype)([residual, x]), before_stride
    return residual, before_stride


def _classic_stem(x, build):
    for i, filters, stride in ((1, 32, 2), (2, 64, 1)):
        name = f"block1_conv{i}"
        x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=name, dtype=build.dtype)(x)
        x = _batch_norm(x, name + "_bn", build)
        x = layers.ReLU(name=name + "_act", dtype=build.dtype)(x)
    return x


def _classic_unit(x, block, prefix, stride, rate, unit_rates, build, first_unit):
    """Chollet's module, named and ordered exactly as keras.applications.Xception.

    Returns the output and the feature map before the max pooling.
    """
    del rate, unit_rates
    dtype = build.dtype
    shortcut = x
    if block.skip == "conv":
        shortcut = layers.Conv2D(block.depths[-1], 1, strides=stride, padding="same",
                                 use_bias=False, name=prefix + "_shortcut", dtype=dtype)(x)
        shortcut = _batch_norm(shortcut, prefix + "_shortcut_bn", build)
    for i, depth in enumerate(block.depths):
        name = f"{prefix}_sepconv{i + 1}"
        if not (block.activation_inside or (first_unit and i == 0)):
            x = layers.ReLU(name=name + "_act", dtype=dtype)(x)
        x = layers.SeparableConv2D(depth, 3, padding="same", use_bias=False, name=name,
                                   dtype=dtype)(x)
        x = _batch_norm(x, name + "_bn", build)
        if block.activation_inside:
            x = layers.ReLU(name=name + "_act", dtype=dtype)(x)
    before_stride = x
    if stride > 1:
        x = layers.MaxPooling2D(3, strides=stride, padding="same", name=prefix + "_pool",
                                dtype=dtype)(x)
    if block.skip == "none":
        return x, before_stride
    return layers.Add(name=prefix + "_add", dtype=dtype)([x, shortcut]), before_stride


_UNIT_FAMILIES = {
    "modified": (_modified_stem, _modified_unit),
    "classic": (_classic_stem, _classic_unit),
}


def _unit_prefix(spec, block, unit_index, unit_number):
    if spec.naming == "keras_applications":
        return f"block{unit_number}"
    return scope_name(f"{block.scope}/unit_{unit_index}/xception_module")


def _walk(inputs, spec, output_stride, multi_grid, build):
    """Stacks the units, turning stride into dilation once `output_stride` is reached.

    Returns the output and the pyramid: at each stride the walk leaves, the
    last feature map before it; at `output_stride`, the output. Each layer is
    tagged with its flow (entry_flow, middle_flow, exit_flow) on the way.
    """
    stem, unit_fn = _UNIT_FAMILIES[spec.unit_family]
    x = stem(inputs, build)
    flow_start, flow = inputs, spec.blocks[0].scope.split("/")[0]
    pyramid = {}
    current_stride, rate, unit_number = 2, 1, 1
    for block_index, block in enumerate(spec.blocks):
        if block.scope.split("/")[0] != flow:
            tag_section(flow_start, x, flow)
            flow_start, flow = x, block.scope.split("/")[0]
        unit_rates = multi_grid if block is spec.blocks[-1] else (1,) * len(block.depths)
        for unit_index in range(1, block.num_units + 1):
            unit_number += 1
            if current_stride == output_stride:
                stride, unit_rate = 1, rate
                rate *= block.stride
            else:
                stride, unit_rate = block.stride, 1
            x, before_stride = unit_fn(x, block, _unit_prefix(spec, block, unit_index, unit_number),
                                       stride, unit_rate, unit_rates, build,
                                       first_unit=block_index == 0 and unit_index == 1)
            if stride > 1:
                pyramid[current_stride] = before_stride
                current_stride *= stride
    tag_section(flow_start, x, flow)
    pyramid[output_stride] = x
    return x, pyramid


def _unit_strides(spec):
    """Accumulated stride after the stem and after each unit."""
    strides, current = [2], 2
    for block in spec.blocks:
        for _ in range(block.num_units):
            current *= block.stride
            strides.append(current)
    return strides


@keras.saving.register_keras_serializable(package="deeplab_xception")
class XceptionBackbone(Backbone):
    """Xception feature extractor: images in [-1, 1] to features at `output_stride`.

    `pyramid_outputs` maps a stride to its feature map; stride 4 is DeepLab's
    decoder tap (the BN output before any ReLU), so heads never need to know
    which layer of which variant that is. `dtype` is the Keras dtype policy of
    every layer ("mixed_bfloat16" computes in bfloat16 with float32 weights);
    `batch_norm_momentum` replaces the checkpoints' 0.9997 (short runs need
    moving statistics that catch up within their few steps).
    """

    CONFIG = ("variant", "output_stride", "multi_grid", "depthwise_layout", "input_shape",
              "batch_norm_momentum", "dtype")

    def __init__(self, variant="xception_65", output_stride=32, multi_grid=None,
                 depthwise_layout="checkpoint", input_shape=(None, None, 3),
                 batch_norm_momentum=BATCH_NORM_MOMENTUM, dtype="float32", **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"variant: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        if depthwise_layout not in DEPTHWISE_LAYOUTS:
            raise ValueError(f"depthwise_layout: {depthwise_layout!r} is not one of {DEPTHWISE_LAYOUTS}")
        check_output_stride(variant, output_stride, self.reachable_output_strides(variant))
        spec = VARIANTS[variant]
        units = len(spec.blocks[-1].depths)
        multi_grid = tuple(int(r) for r in (multi_grid or (1,) * units))
        if len(multi_grid) != units:
            raise ValueError(f"multi_grid: needs {units} rates, got {multi_grid}")
        inputs = keras.Input(shape=tuple(input_shape), name="images")
        dtype = dtype_policy_name(dtype)
        build = _Build(dtype, batch_norm_momentum, depthwise_layout)
        outputs, pyramid = _walk(inputs, spec, output_stride, multi_grid, build)
        super().__init__(inputs, outputs, pyramid, output_stride, dtype,
                         name=kwargs.pop("name", variant), **kwargs)
        self.variant = variant
        self.spec = spec
        self.multi_grid = multi_grid
        self.depthwise_layout = depthwise_layout
        self.image_shape = tuple(input_shape)
        self.batch_norm_momentum = batch_norm_momentum

    @classmethod
    def reachable_output_strides(cls, variant="xception_65", **config):
        """Output strides the variant's units reach (dilation covers the rest), or its spec's list."""
        spec = VARIANTS[variant]
        if spec.output_strides:
            return tuple(spec.output_strides)
        return tuple(sorted(s for s in set(_unit_strides(spec)) if s >= 4))
