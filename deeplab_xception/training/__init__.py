"""The one training loop, shared by ImageNet pretraining and segmentation fine-tuning.

An application implements `Task` (data, model, loss, metrics) and fills a
`TrainerConfig`; `train(task, config)` runs it under the strategy the config
and `TF_CONFIG` choose.
"""

from deeplab_xception.training.config import OptimizerConfig, ScheduleConfig, TrainerConfig
from deeplab_xception.training.task import Task, WarmStart
from deeplab_xception.training.trainer import FINAL_MODEL, prepare, train
