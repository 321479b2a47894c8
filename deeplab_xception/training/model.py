"""The `model:` section both applications' configs share, and the one mapping from it to
`build_model`.

Fields left at None take the model's own default (`build_model` and the heads
say which): output stride 16 for DeepLab and 32 for a classifier, dropout 0.1
and 0.5, the decoder and separable convolutions on. What an application's data
fixes (the classes, a classifier's input size) it gives to `build_configured`.
"""

import dataclasses
from typing import Optional

from deeplab_xception.errors import UserError
from deeplab_xception.models import build_model
from deeplab_xception.models.layers import configure_batch_norms

DEEPLAB_ONLY = ("atrous_rates", "decoder", "separable")


@dataclasses.dataclass
class ModelConfig:
    backbone: str = "xception_65"
    num_classes: Optional[int] = None   # classifier: its logits; DeepLab: the dataset's, if given
    output_stride: Optional[int] = None
    atrous_rates: Optional[tuple[int, ...]] = None  # None: (6, 12, 18) scaled to the output stride
    multi_grid: Optional[tuple[int, ...]] = None
    decoder: Optional[bool] = None
    separable: Optional[bool] = None
    depthwise_layout: str = "checkpoint"
    dropout: Optional[float] = None
    fine_tune_batch_norm: bool = True   # False freezes BN (statistics and scale), for small batches
    batch_norm_momentum: Optional[float] = None  # None: the checkpoints' 0.9997; short runs want ~0.9

    def validate(self):
        """The builder checks which output strides the backbone reaches; 0 would mean its default."""
        if self.output_stride is not None and self.output_stride <= 0:
            raise UserError(f"output_stride must be positive, got {self.output_stride}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")


def build_configured(config, kind, **given):
    """The untrained `build_model(kind, ...)` that `config` (a ModelConfig) describes, with what
    the application gives (`given`: the data's classes, the input shape, the dtype policy),
    its batch norms frozen unless `fine_tune_batch_norm`. A field set against `given`, or one
    the kind does not take, is a UserError naming it."""
    options = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)
               if field.name != "fine_tune_batch_norm" and getattr(config, field.name) is not None}
    for name, value in given.items():
        if options.get(name, value) != value:
            raise UserError(f"model.{name}: {options[name]}, but the data has {value}")
    if kind != "deeplab":
        for name in DEEPLAB_ONLY:
            if name in options:
                raise UserError(f"model.{name}: a {kind} model has no {name} (DeepLab only)")
    try:
        model = build_model(kind, **{**options, **given})
    except ValueError as e:
        raise UserError(f"model: {str(e).splitlines()[0]}") from None
    configure_batch_norms(model, trainable=config.fine_tune_batch_norm)
    return model
