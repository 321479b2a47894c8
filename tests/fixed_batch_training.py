"""Runs the fine-tuning trainer of this process's Keras backend on one fixed batch, repeated.

    KERAS_BACKEND=tensorflow|jax python tests/fixed_batch_training.py BATCH.npz DATA_ROOT MODEL_DIR KEY=VALUE...

The batch (`images`, preprocessed, and `labels`) feeds every step through the
task's own input methods (tf.data for TensorFlow, a PyDataset for JAX), so the
two trainers can be compared step for step (tests/test_jax_training.py).
"""

import sys

import keras
import numpy as np

from deeplab_xception.config import load_config
from deeplab_xception.training import prepare, train
from deeplab_xception.segment.config import SegmentConfig
from deeplab_xception.segment.task import SegmentationTask


class RepeatedBatch(keras.utils.PyDataset):
    def __init__(self, batch):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batch = batch

    @property
    def num_batches(self):
        return None

    def __getitem__(self, index):
        return self.batch


class FixedBatchTask(SegmentationTask):
    def __init__(self, config, batch):
        super().__init__(config)
        self.batch = batch

    def train_dataset(self, input_context, batch_size):
        import tensorflow as tf

        return tf.data.Dataset.from_tensors(self.batch).repeat()

    def train_batches(self, batch_size, seed):
        assert batch_size == len(self.batch[0]), (batch_size, len(self.batch[0]))
        return RepeatedBatch(self.batch)


def main(batch_path, data_root, model_dir, *overrides):
    with np.load(batch_path) as arrays:
        batch = arrays["images"], arrays["labels"]
    config = load_config(SegmentConfig, "segment_tiny.yaml", [
        f"data.root={data_root}", f"trainer.model_dir={model_dir}", *overrides])
    prepare(config.trainer)
    train(FixedBatchTask(config, batch), config.trainer)
    print("tensorflow imported:", "tensorflow" in sys.modules)


if __name__ == "__main__":
    main(*sys.argv[1:])
