"""The one training loop, shared by ImageNet pretraining and segmentation fine-tuning.

An application implements `Task` (data, model, loss, metrics) and fills a
`TrainerConfig`; `train(task, config)` runs it on the Keras backend in use:
TensorFlow (`trainer.py`, every tf.distribute strategy, the parameter-server
cluster included) or JAX (`jax_trainer.py`, one process, one device or all
local devices in data parallel). Nothing here imports TensorFlow until the
TensorFlow trainer runs, so the JAX path works where TensorFlow is not installed.
"""

import importlib

import keras

from deeplab_xception.training.config import (
    EVAL_RESULTS, FINAL_MODEL, FINAL_STEP, OptimizerConfig, ScheduleConfig, TrainerConfig)
from deeplab_xception.training.task import Task, WarmStart


def _engine():
    name = "jax_trainer" if keras.backend.backend() == "jax" else "trainer"
    return importlib.import_module(f"deeplab_xception.training.{name}")


def prepare(config):
    """Call before building the task (see the engine's `prepare`)."""
    return _engine().prepare(config)


def train(task, config):
    """Runs `task` under `config` on this backend's engine; returns the final step."""
    return _engine().train(task, config)
