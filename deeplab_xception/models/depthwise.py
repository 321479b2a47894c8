"""Depthwise convolution as a sum of shifted, scaled copies of its input.

XLA hands a depthwise conv to cuDNN as a grouped convolution, which is slow on
GPUs, slower still when dilated and in its backward pass. Written as k x k
shifted multiply-adds, it becomes one elementwise loop that XLA fuses with the
padding and the casts, bound by memory bandwidth alone. Same weights and
config as `keras.layers.DepthwiseConv2D`, float32 accumulation in every
lower precision (float64 in float64); taps that fall wholly in the padding are skipped. It needs static
spatial sizes, as under `jax.jit`.
"""

import keras
from keras import ops

from deeplab_xception.models.backbones.base import copy_weights_by_name


def _taps(size, kernel, stride, rate, padding):
    """(output size, padding before, padding after, kept tap indices) along one axis."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + (kernel - 1) * rate + 1 - size, 0)
        before, after = total // 2, total - total // 2
    else:
        out = (size - (kernel - 1) * rate - 1) // stride + 1
        before = after = 0
    span = (out - 1) * stride
    kept = [i for i in range(kernel)
            if i * rate - before + span >= 0 and i * rate - before <= size - 1]
    return out, before, after, kept


@keras.saving.register_keras_serializable(package="deeplab_xception")
class ShiftedDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """`DepthwiseConv2D` (channels last, depth multiplier 1) as shifted multiply-adds."""

    def call(self, inputs):
        _, height, width, channels = inputs.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        out_h, top, bottom, rows = _taps(height, kh, sh, dh, self.padding)
        out_w, left, right, cols = _taps(width, kw, sw, dw, self.padding)
        accumulate = "float64" if self.compute_dtype == "float64" else "float32"
        x = ops.pad(ops.cast(inputs, accumulate), [[0, 0], [top, bottom], [left, right], [0, 0]])
        kernel = ops.cast(self.kernel, accumulate)
        total = None
        for i in rows:
            for j in cols:
                shifted = x[:, i * dh:i * dh + (out_h - 1) * sh + 1:sh,
                            j * dw:j * dw + (out_w - 1) * sw + 1:sw, :]
                term = shifted * kernel[i, j, :, 0]
                total = term if total is None else total + term
        if self.use_bias:
            total = total + ops.cast(self.bias, accumulate)
        outputs = ops.cast(total, self.compute_dtype)
        return outputs if self.activation is None else self.activation(outputs)


def shiftable(layer):
    """Whether `layer` is a depthwise conv that `ShiftedDepthwiseConv2D` computes the same."""
    return (type(layer) is keras.layers.DepthwiseConv2D and layer.depth_multiplier == 1
            and layer.data_format == "channels_last"
            and (layer.padding == "valid" or max(layer.strides) == 1))


def with_shifted_depthwise(model):
    """A copy of `model`, same weights, with each shiftable depthwise conv shifted."""

    def clone(layer):
        cls = ShiftedDepthwiseConv2D if shiftable(layer) else layer.__class__
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy_weights_by_name(model, copy)
    return copy
