"""Multiply-adds (and optionally measured time) of a model, per eval output stride: the
count (`multiply_adds`, the paper's convention), the timing (`timing`) and the chart
(`budget_plot`) composed into one row per stride.

Multi-scale and flip evaluation run the same graph on each scaled image, so counts and
measured time are summed over scales and doubled by flip.
"""

import dataclasses

from deeplab_xception.errors import ArgumentError, UserError
from deeplab_xception.models import KINDS, build_model
from deeplab_xception.models.backbones import BACKBONES, check_output_stride, reachable_output_strides
from deeplab_xception.models.layers import scale_dimension, weights_to_come
from deeplab_xception.runtime.multiply_adds import pass_multiply_adds
from deeplab_xception.runtime.precision import resolve_precision
from deeplab_xception.runtime.timing import measure_seconds, with_trained_shifts


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


def _model(kind, backbone, output_stride, num_classes, head):
    try:
        with weights_to_come():  # counts and times need no random draws (under JAX,
            # each weight shape's draw compiles a program: seconds per model)
            return build_model(kind, backbone, output_stride=output_stride,
                               num_classes=num_classes, **head)
    except UserError:
        raise
    except ValueError as e:
        raise UserError(str(e)) from None


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
        model = _model(kind, backbone, stride, num_classes, head)
        totals = pass_multiply_adds(model, sizes, passes)
        row = BudgetRow(
            kind=kind, backbone=backbone, eval_output_stride=stride,
            decoder=head.get("decoder"), separable=head.get("separable"), scales=scales, flip=flip,
            input_size=tuple(input_size), num_classes=getattr(model, "num_classes", None),
            multiply_adds=sum(p for p, _ in totals.values()),
            multiply_adds_exact=sum(e for _, e in totals.values()),
            parameters=model.count_params(),
            breakdown={b: {"multiply_adds": p, "multiply_adds_exact": e}
                       for b, (p, e) in totals.items()})
        if repeats is not None:
            if report:
                report(f"measuring output stride {stride} ({len(rows) + 1} of "
                       f"{len(output_strides)}): {repeats} timed run{'s' * (repeats > 1)} at "
                       f"{' and '.join(f'{h}x{w}' for h, w in sizes)} in {precision}")
            with_trained_shifts(model)  # its own model, built with zeros
            measured = [measure_seconds(model, size, repeats, precision) for size in sizes]
            row.seconds = passes * sum(seconds for seconds, _ in measured)
            row.images_per_second = 1.0 / row.seconds
            row.precision = " and ".join(sorted(set().union(*(ran for _, ran in measured))))
        rows.append(row)
    return rows
