"""The pretraining config schema: model, data and trainer sections (see the shipped pretrain_*.yaml)."""

import dataclasses

from deeplab_xception.data.preprocessing import CENTRAL_FRACTION, CLASSIFIER_IMAGE_SIZE
from deeplab_xception.training import TrainerConfig
from deeplab_xception.training.model import ModelConfig


@dataclasses.dataclass
class DataConfig:
    format: str = "tfrecord"              # "tfrecord" (TF's ImageNet shards) or "directory"
    train: str = ""                       # a glob of TFRecord shards, or a directory of class folders
    eval: str = ""
    image_size: int = CLASSIFIER_IMAGE_SIZE
    central_fraction: float = CENTRAL_FRACTION  # of the image kept by the evaluation crop
    shuffle_buffer: int = 10000
    synthetic: bool = False               # first write the learnable synthetic set at `train`'s folder


@dataclasses.dataclass
class PretrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
