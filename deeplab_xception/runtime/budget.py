"""Multiply-adds (and optionally measured time) of a model, per eval output stride.

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
scales and doubled by flip; so is the measured time.
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
from keras import layers

from deeplab_xception.models.backbones import BACKBONES, check_output_stride, reachable_output_strides
from deeplab_xception.errors import ArgumentError, UserError
from deeplab_xception.runtime.compiled import compiled_call
from deeplab_xception.io import atomic_path
from deeplab_xception.models.layers import scale_dimension, weights_to_come
from deeplab_xception.models import KINDS, build_model
from deeplab_xception.runtime.precision import resolve_precision

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


def measure_seconds(model, image_size, repeats, precision="float32"):
    """(median wall time of one batch-1 prediction on the inference path the CLI uses, the
    precision it computed in)."""
    images = np.random.default_rng(0).uniform(-1, 1, (1, *image_size, 3)).astype("float32")
    run = compiled_call(model, precision, freeze_after_pixels=0)  # the steady state
    np.asarray(run(images))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(run(images))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), run.precisions


@dataclasses.dataclass
class BudgetRow:
    kind: str
    backbone: str
    eval_output_stride: int
    decoder: bool | None     # None when the kind has no DeepLab head
    separable: bool | None
    scales: tuple
    flip: bool
    input_size: tuple
    num_classes: int | None
    multiply_adds: int       # paper convention, summed over scales and flips
    multiply_adds_exact: int
    parameters: int
    breakdown: dict          # section: {"multiply_adds": ..., "multiply_adds_exact": ...}
    seconds: float | None = None  # measured time per image (all scales and flips)
    images_per_second: float | None = None
    precision: str | None = None  # what the measured network computed in

    def to_dict(self):
        return dataclasses.asdict(self)


def _check(kind, backbone, input_size, num_classes, output_strides, scales, repeats):
    if kind not in KINDS:
        raise ArgumentError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    if backbone not in BACKBONES:
        raise ArgumentError("backbone", f"unknown backbone {backbone!r}; "
                                        f"choose one of {', '.join(sorted(BACKBONES))}")
    if len(input_size) != 2 or any(int(d) != d or d < 1 for d in input_size):
        raise ArgumentError("input_size", f"need two positive integers H W, got {tuple(input_size)}")
    if num_classes is not None and num_classes < 1:
        raise ArgumentError("num_classes", f"must be positive, got {num_classes}")
    for stride in output_strides or ():
        check_output_stride(backbone, stride, reachable_output_strides(backbone), "output_strides")
    if not scales or any(s <= 0 for s in scales):
        raise ArgumentError("scales", f"need positive scales, got {' '.join(f'{s:g}' for s in scales)}")
    if repeats is not None and repeats < 1:
        raise ArgumentError("repeats", f"need at least 1 timed run, got {repeats}")


def default_output_strides(backbone):
    """8, 16 and 32, or those of them the backbone reaches."""
    return tuple(s for s in (8, 16, 32) if s in reachable_output_strides(backbone))


def budget(kind="deeplab", backbone="xception_65", input_size=(513, 513), num_classes=None,
           output_strides=None, decoder=True, separable=True, scales=(1.0,), flip=False, repeats=None,
           precision="auto", report=None):
    """One BudgetRow per eval output stride; with `repeats`, also the time measured on this
    machine, the network computing in `precision` ("auto" by default, as `segment` runs).
    `report(message)`, when given, hears what is being measured (it takes minutes)."""
    scales = tuple(float(s) for s in scales)
    _check(kind, backbone, input_size, num_classes, output_strides, scales, repeats)
    resolve_precision(precision)  # checks the name; "auto" may depend on the size (a JAX GPU)
    output_strides = tuple(output_strides or default_output_strides(backbone))
    head = dict(decoder=decoder, separable=separable) if kind == "deeplab" else {}
    sizes = [(scale_dimension(input_size[0], s), scale_dimension(input_size[1], s)) for s in scales]
    passes = 2 if flip else 1
    rows = []
    for stride in output_strides:
        try:
            with weights_to_come():  # counts and times need no random draws (under JAX,
                # each weight shape's draw compiles a program: seconds per model)
                model = build_model(kind, backbone, output_stride=stride, num_classes=num_classes,
                                    **head)
        except UserError:
            raise
        except ValueError as e:
            raise UserError(str(e)) from None
        totals = {}
        for size in sizes:
            for section, counts in count_multiply_adds(model, size).items():
                previous = totals.get(section, (0, 0))
                totals[section] = tuple(p + passes * c for p, c in zip(previous, counts))
        order = sorted(totals, key=lambda b: SECTIONS.index(b) if b in SECTIONS else len(SECTIONS))
        row = BudgetRow(
            kind=kind, backbone=backbone, eval_output_stride=stride,
            decoder=head.get("decoder"), separable=head.get("separable"), scales=scales, flip=flip,
            input_size=tuple(input_size), num_classes=getattr(model, "num_classes", None),
            multiply_adds=sum(p for p, _ in totals.values()),
            multiply_adds_exact=sum(e for _, e in totals.values()),
            parameters=model.count_params(),
            breakdown={b: {"multiply_adds": totals[b][0], "multiply_adds_exact": totals[b][1]}
                       for b in order})
        if repeats is not None:
            if report:
                report(f"measuring output stride {stride} ({len(rows) + 1} of "
                       f"{len(output_strides)}): {repeats} timed run{'s' * (repeats > 1)} at "
                       f"{' and '.join(f'{h}x{w}' for h, w in sizes)} in {precision}")
            measured = [measure_seconds(model, size, repeats, precision) for size in sizes]
            row.seconds = passes * sum(seconds for seconds, _ in measured)
            row.images_per_second = 1.0 / row.seconds
            row.precision = " and ".join(sorted(set().union(*(ran for _, ran in measured))))
        rows.append(row)
    return rows


def plot_format(path):
    """The image format matplotlib writes for `path`'s extension (checked before any counting)."""
    from matplotlib.figure import Figure

    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if extension not in Figure().canvas.get_supported_filetypes():
        raise UserError(f"{path}: cannot write a plot with extension {extension!r}")
    return extension


def plot_budget(rows, path):
    """Bar chart of multiply-adds (and measured time, when present) per eval output stride."""
    from matplotlib.figure import Figure

    extension = plot_format(path)
    figure = Figure()
    measured = all(row.seconds is not None for row in rows)
    axes = figure.subplots(1, 2 if measured else 1, squeeze=False)[0]
    labels = [f"OS {row.eval_output_stride}" for row in rows]
    axes[0].bar(labels, [row.multiply_adds / 1e9 for row in rows])
    axes[0].set_ylabel("multiply-adds (billions)")
    if measured:
        axes[1].bar(labels, [row.seconds for row in rows], color="tab:orange")
        axes[1].set_ylabel("seconds per image")
    first = rows[0]
    figure.suptitle(f"{first.backbone} {first.kind}, {first.input_size[0]}x{first.input_size[1]}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=extension)
