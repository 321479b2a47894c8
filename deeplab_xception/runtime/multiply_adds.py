"""Multiply-adds of a model, counted as the DeepLabv3+ paper counts them.

The count walks the built Keras model: one rule per layer type, applied to the
layer's weights and its symbolic output shape (batch 1), so any change to the
model changes its budget. Conv2D, DepthwiseConv2D, SeparableConv2D and Dense
cost (output positions) x (kernel elements); everything else (batch norm,
ReLU, pooling, resize, padding, concat, add, biases) counts zero.

Two conventions are reported:
- `multiply_adds_exact`: positions are the layer's true output sizes.
- `multiply_adds`, the DeepLabv3+ paper's (TF profiler float ops / 2): TF runs
  a conv with dilation rate r > 1 through space-to-batch. With SAME padding an
  input of size n is padded by (k - 1) * r and then up to a multiple of r, split
  into r x r grids of ceil(n / r) + k - 1 positions each, and every grid gives
  ceil(n / r) outputs; VALID gives the same count in terms of its output size.
  So each spatial output size o of a dilated conv counts as ceil(o / r) * r.
  For a SeparableConv2D only the depthwise part is dilated; its pointwise part
  runs on the true size. Undilated layers are the same in both conventions.
  This lands within 0.3% of every single-scale row of the paper's Table 5; the
  rest is batch norm, biases and resizes, which the profiler counts too.

Multi-scale and flip evaluation run the same graph on each scaled image
(scale_dimension(H, s) x scale_dimension(W, s)), so the counts are summed over
scales and doubled by flip (`pass_multiply_adds`).
"""

import math

import keras
from keras import layers

COUNTED_LAYERS = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)
# The breakdown's order: the `section` tags the builders put on layers.
SECTIONS = ("entry_flow", "middle_flow", "exit_flow", "backbone", "aspp", "decoder", "logits")


def _positions(shape, rates, padded):
    """Output positions of a conv, each spatial size rounded up to its rate when `padded`."""
    sizes = shape[1:-1]
    if padded:
        sizes = [math.ceil(size / rate) * rate for size, rate in zip(sizes, rates)]
    return math.prod(sizes)


def layer_multiply_adds(layer, output_shape, padded=True):
    """Multiply-adds of one layer call producing `output_shape` (0 for uncounted types)."""
    if isinstance(layer, layers.SeparableConv2D):
        depthwise = math.prod(layer.depthwise_kernel.shape)
        pointwise = math.prod(layer.pointwise_kernel.shape)
        return (_positions(output_shape, layer.dilation_rate, padded) * depthwise
                + math.prod(output_shape[1:-1]) * pointwise)
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
        return _positions(output_shape, layer.dilation_rate, padded) * math.prod(layer.kernel.shape)
    if isinstance(layer, layers.Dense):
        return math.prod(output_shape[1:-1]) * math.prod(layer.kernel.shape)
    return 0


def count_multiply_adds(model, image_size):
    """{section: (multiply_adds, multiply_adds_exact)} of one batch-1 pass at `image_size`.

    Output shapes come from `compute_output_spec` on the functional graph, so
    nothing runs, and a model built for (None, None, 3) inputs is counted at any size.
    """
    counted = [layer for layer in model.layers if isinstance(layer, COUNTED_LAYERS)]
    probe = keras.Model(model.input, [layer.output for layer in counted])
    specs = probe.compute_output_spec(keras.KerasTensor((1, *image_size, 3)))
    sections = {}
    for layer, spec in zip(counted, specs):
        section = getattr(layer, "section", "other")
        padded, exact = sections.get(section, (0, 0))
        sections[section] = (padded + layer_multiply_adds(layer, spec.shape, padded=True),
                             exact + layer_multiply_adds(layer, spec.shape, padded=False))
    return sections


def pass_multiply_adds(model, sizes, passes=1):
    """{section: (multiply_adds, multiply_adds_exact)} summed over one pass per image size in
    `sizes`, times `passes` (2 with flips), in the order of SECTIONS."""
    totals = {}
    for size in sizes:
        for section, counts in count_multiply_adds(model, size).items():
            previous = totals.get(section, (0, 0))
            totals[section] = tuple(p + passes * c for p, c in zip(previous, counts))
    order = sorted(totals, key=lambda b: SECTIONS.index(b) if b in SECTIONS else len(SECTIONS))
    return {section: totals[section] for section in order}
