"""ImageNet classification as a `deeplab_xception.training.Task`.

The trained classifier ends as `<model_dir>/model.keras`. Segmentation
fine-tuning starts from it by layer name (`init.weights`, or
`deeplab_xception.weights.transfer.load_matching_weights`): every backbone
layer is copied into a DeepLabv3+ built by `build_model` on the same variant.
"""

import keras
import tensorflow as tf

from deeplab_xception.pretrain import data
from deeplab_xception.training.model import build_configured


class ClassificationTask:
    """Softmax cross-entropy over `num_classes` logits; top-1 and top-5 accuracy."""

    def __init__(self, config):
        data.check(config.data)
        self.config = config

    def build_model(self):
        size = self.config.data.image_size
        return build_configured(self.config.model, "classifier",
                                num_classes=self.config.model.num_classes or data.NUM_CLASSES,
                                activation=None, input_shape=(size, size, 3),
                                dtype=self.config.trainer.dtype_policy)

    def train_dataset(self, input_context, batch_size):
        return data.train_dataset(self.config.data, input_context, batch_size)

    def eval_dataset(self, batch_size):
        return data.eval_dataset(self.config.data, batch_size)

    def loss(self, labels, outputs):
        """Mean over the replica's batch of the cross-entropy."""
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, outputs, from_logits=True))

    def metrics(self):
        return [keras.metrics.SparseCategoricalAccuracy(name="top1"),
                keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")]
