"""The fine-tuning config: model, data, starting weights, evaluation, and the trainer's settings."""

import dataclasses

from deeplab_xception.data.classes import EVAL_CROP_SIZES
from deeplab_xception.errors import UserError
from deeplab_xception.training import ScheduleConfig, TrainerConfig
from deeplab_xception.training.model import ModelConfig


@dataclasses.dataclass
class DataConfig:
    format: str = "voc"                 # a key of segment.datasets.FORMATS
    root: str = ""
    train_split: str = "trainaug"
    val_split: str = "val"
    tfrecords: str = ""                 # TFRecord shards of train_split; empty: stream the folder
    categories: tuple[str, ...] = ()    # COCO only: the categories that become classes 1..K
    crop_size: tuple[int, int] = (513, 513)
    eval_crop_size: tuple[int, int] = EVAL_CROP_SIZES["voc"]  # in-training evaluation pads to it
    min_scale: float = 0.5
    max_scale: float = 2.0
    scale_step: float = 0.25
    flip: bool = True
    workers: int = 0                    # JAX only: input processes; 0: one per core but one
    synthetic: bool = False             # first write the generated shapes set at `root`, unless there

    def validate(self):
        """What augmentation and evaluation need, checked when the config loads."""
        for name in ("crop_size", "eval_crop_size"):
            if min(getattr(self, name)) < 1:
                raise UserError(f"{name} must be two positive sizes, got {list(getattr(self, name))}")
        if self.min_scale <= 0:
            raise UserError(f"min_scale must be positive, got {self.min_scale}")
        if self.min_scale > self.max_scale:
            raise UserError(f"min_scale {self.min_scale} is more than max_scale {self.max_scale}")
        if self.scale_step < 0:
            raise UserError(f"scale_step must be 0 or more, got {self.scale_step}")


@dataclasses.dataclass
class InitConfig:
    weights: str = ""          # "": from scratch; a model.keras, official checkpoint or zoo name
    last_layer: bool = False   # also copy the logits (the checkpoint's classes must match)


@dataclasses.dataclass
class SegmentConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=lambda: TrainerConfig(
        model_dir="runs/segment", train_steps=30000, batch_size_per_replica=16,
        learning_rate=ScheduleConfig(name="poly", initial=0.007, power=0.9)))
