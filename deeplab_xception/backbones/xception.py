"""The one builder for every Xception variant in `specs.VARIANTS`."""

import keras
from keras import layers

from deeplab_xception.backbones.specs import DEPTHWISE_LAYOUTS, VARIANTS
from deeplab_xception.layers import dtype_policy_name, fixed_padding

# Backbone batch norm of the released checkpoints (slim: decay 0.9997, epsilon 1e-3).
BATCH_NORM = dict(momentum=0.9997, epsilon=1e-3)
# Official xception_arg_scope initializes every backbone conv this way.
INITIALIZER_STDDEV = 0.09


def scope_name(scope):
    """Keras layer names cannot hold '/', so official scopes are spelled with '.'."""
    return scope.replace("/", ".")


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=INITIALIZER_STDDEV)


def _batch_norm(x, name, dtype):
    return layers.BatchNormalization(name=name + ".BatchNorm", dtype=dtype, **BATCH_NORM)(x)


def _conv_same(x, filters, kernel_size, stride, rate, name, dtype, depthwise=False):
    """TF-slim conv2d_same: SAME when unstrided, explicit padding + VALID when strided."""
    padding = "same"
    if stride > 1:
        x = layers.ZeroPadding2D(fixed_padding(kernel_size, rate), name=name + ".pad", dtype=dtype)(x)
        padding = "valid"
    if depthwise:
        return layers.DepthwiseConv2D(
            kernel_size, strides=stride, dilation_rate=rate, padding=padding,
            use_bias=False, depthwise_initializer=_initializer(), name=name, dtype=dtype)(x)
    return layers.Conv2D(
        filters, kernel_size, strides=stride, dilation_rate=rate, padding=padding,
        use_bias=False, kernel_initializer=_initializer(), name=name, dtype=dtype)(x)


def _modified_stem(x, dtype):
    for name, filters, stride in (("entry_flow.conv1_1", 32, 2), ("entry_flow.conv1_2", 64, 1)):
        x = _conv_same(x, filters, 3, stride, 1, name, dtype)
        x = _batch_norm(x, name, dtype)
        x = layers.ReLU(name=name + ".relu", dtype=dtype)(x)
    return x


def _modified_unit(x, block, prefix, stride, rate, unit_rates, layout, first_unit, dtype):
    """DeepLab's xception_module: three separable convs, the stride on the last."""
    del first_unit  # DeepLab applies the leading ReLU in every unit.
    residual = x
    last = len(block.depths) - 1
    for i, depth in enumerate(block.depths):
        name = f"{prefix}.separable_conv{i + 1}"
        if not block.activation_inside:
            residual = layers.ReLU(name=name + ".relu_in", dtype=dtype)(residual)
        residual = _conv_same(residual, None, 3, stride if i == last else 1,
                              rate * unit_rates[i], name + "_depthwise", dtype, depthwise=True)
        if layout != "plain":
            residual = _batch_norm(residual, name + "_depthwise", dtype)
        if layout == "paper" or (layout == "checkpoint" and block.activation_inside):
            residual = layers.ReLU(name=name + "_depthwise.relu", dtype=dtype)(residual)
        residual = layers.Conv2D(depth, 1, use_bias=False, kernel_initializer=_initializer(),
                                 name=name + "_pointwise", dtype=dtype)(residual)
        residual = _batch_norm(residual, name + "_pointwise", dtype)
        if block.activation_inside:
            residual = layers.ReLU(name=name + "_pointwise.relu", dtype=dtype)(residual)
    if block.skip == "conv":
        shortcut = layers.Conv2D(block.depths[-1], 1, strides=stride, padding="same",
                                 use_bias=False, kernel_initializer=_initializer(),
                                 name=prefix + ".shortcut", dtype=dtype)(x)
        shortcut = _batch_norm(shortcut, prefix + ".shortcut", dtype)
        return layers.Add(name=prefix + ".add", dtype=dtype)([residual, shortcut])
    if block.skip == "sum":
        return layers.Add(name=prefix + ".add", dtype=dtype)([residual, x])
    return residual


def _classic_stem(x, dtype):
    for i, filters, stride in ((1, 32, 2), (2, 64, 1)):
        name = f"block1_conv{i}"
        x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=name, dtype=dtype)(x)
        x = layers.BatchNormalization(name=name + "_bn", dtype=dtype)(x)
        x = layers.ReLU(name=name + "_act", dtype=dtype)(x)
    return x


def _classic_unit(x, block, prefix, stride, rate, unit_rates, layout, first_unit, dtype):
    """Chollet's module, named and ordered exactly as keras.applications.Xception."""
    del rate, unit_rates, layout
    shortcut = x
    if block.skip == "conv":
        shortcut = layers.Conv2D(block.depths[-1], 1, strides=stride, padding="same",
                                 use_bias=False, name=prefix + "_shortcut", dtype=dtype)(x)
        shortcut = layers.BatchNormalization(name=prefix + "_shortcut_bn", dtype=dtype)(shortcut)
    for i, depth in enumerate(block.depths):
        name = f"{prefix}_sepconv{i + 1}"
        if not (block.activation_inside or (first_unit and i == 0)):
            x = layers.ReLU(name=name + "_act", dtype=dtype)(x)
        x = layers.SeparableConv2D(depth, 3, padding="same", use_bias=False, name=name,
                                   dtype=dtype)(x)
        x = layers.BatchNormalization(name=name + "_bn", dtype=dtype)(x)
        if block.activation_inside:
            x = layers.ReLU(name=name + "_act", dtype=dtype)(x)
    if stride > 1:
        x = layers.MaxPooling2D(3, strides=stride, padding="same", name=prefix + "_pool",
                                dtype=dtype)(x)
    if block.skip == "none":
        return x
    return layers.Add(name=prefix + "_add", dtype=dtype)([x, shortcut])


_MODULES = {
    "modified": (_modified_stem, _modified_unit),
    "classic": (_classic_stem, _classic_unit),
}


def _unit_prefix(spec, block, unit_index, unit_number):
    if spec.module == "classic":
        return f"block{unit_number}"
    return scope_name(f"{block.scope}/unit_{unit_index}/xception_module")


def _walk(x, spec, output_stride, multi_grid, layout, dtype):
    """Stacks the units, turning stride into dilation once `output_stride` is reached."""
    stem, unit_fn = _MODULES[spec.module]
    x = stem(x, dtype)
    current_stride, rate, unit_number = 2, 1, 1
    for block_index, block in enumerate(spec.blocks):
        unit_rates = multi_grid if block is spec.blocks[-1] else (1,) * len(block.depths)
        for unit_index in range(1, block.num_units + 1):
            unit_number += 1
            if current_stride == output_stride:
                stride, unit_rate = 1, rate
                rate *= block.stride
            else:
                stride, unit_rate = block.stride, 1
                current_stride *= block.stride
            x = unit_fn(x, block, _unit_prefix(spec, block, unit_index, unit_number),
                        stride, unit_rate, unit_rates, layout,
                        first_unit=block_index == 0 and unit_index == 1, dtype=dtype)
    return x


def reachable_output_strides(variant):
    """Output strides the variant's units can produce (dilation covers the rest)."""
    spec = VARIANTS[variant]
    if spec.module == "classic":
        return (32,)
    strides, current = [2], 2
    for block in spec.blocks:
        for _ in range(block.num_units):
            current *= block.stride
            if current not in strides:
                strides.append(current)
    return tuple(s for s in strides if s >= 4)


@keras.saving.register_keras_serializable(package="deeplab_xception")
class XceptionBackbone(keras.Model):
    """Xception feature extractor: images in [-1, 1] to features at `output_stride`.

    `pyramid_outputs` maps a stride to its feature map; stride 4 is DeepLab's
    decoder tap (the BN output before any ReLU), so heads never need to know
    which layer of which variant that is. `dtype` is the Keras dtype policy of
    every layer ("mixed_bfloat16" computes in bfloat16 with float32 weights).
    """

    def __init__(self, variant="xception_65", output_stride=32, multi_grid=None,
                 depthwise_layout="checkpoint", input_shape=(None, None, 3), dtype="float32",
                 **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"backbone: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        if depthwise_layout not in DEPTHWISE_LAYOUTS:
            raise ValueError(f"depthwise_layout: {depthwise_layout!r} is not one of {DEPTHWISE_LAYOUTS}")
        if output_stride not in reachable_output_strides(variant):
            raise ValueError(f"output_stride: {variant} cannot run at output stride {output_stride}; "
                             f"choose one of {reachable_output_strides(variant)}")
        spec = VARIANTS[variant]
        units = len(spec.blocks[-1].depths)
        multi_grid = tuple(int(r) for r in (multi_grid or (1,) * units))
        if len(multi_grid) != units:
            raise ValueError(f"multi_grid: needs {units} rates, got {multi_grid}")
        inputs = keras.Input(shape=tuple(input_shape), name="images")
        dtype = dtype_policy_name(dtype)
        outputs = _walk(inputs, spec, output_stride, multi_grid, depthwise_layout, dtype)
        super().__init__(inputs=inputs, outputs=outputs, name=kwargs.pop("name", variant), **kwargs)
        self.layer_dtype = dtype
        self.variant = variant
        self.output_stride = output_stride
        self.multi_grid = multi_grid
        self.depthwise_layout = depthwise_layout
        self.image_shape = tuple(input_shape)
        self.pyramid_outputs = {output_stride: outputs}
        if spec.decoder_tap:
            self.pyramid_outputs[4] = self.get_layer(scope_name(spec.decoder_tap) + ".BatchNorm").output

    @property
    def num_features(self):
        return self.output.shape[-1]

    def get_config(self):
        return {
            "variant": self.variant,
            "output_stride": self.output_stride,
            "multi_grid": list(self.multi_grid),
            "depthwise_layout": self.depthwise_layout,
            "input_shape": list(self.image_shape),
            "dtype": self.layer_dtype,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
