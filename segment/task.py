"""Semantic segmentation as a task for the shared trainer: data, model, loss, metrics."""

import keras
import tensorflow as tf

from deeplab_xception.deeplab import DeepLabV3Plus
from deeplab_xception.errors import UserError
from deeplab_xception.layers import configure_batch_norms
from deeplab_xception.models import build_model
from deeplab_xception.preprocessing import IGNORE_LABEL
from deeplab_xception.training import WarmStart
from segment import augment, pipeline, records
from segment.datasets import load_dataset

LOGITS = DeepLabV3Plus.LOGITS


class SegmentationTask:
    """DeepLabv3+ fine-tuning as the paper does it (see `SegmentConfig` for the knobs)."""

    def __init__(self, config):
        self.config = config
        data = config.data
        self.train_set = load_dataset(data.format, data.root, data.train_split,
                                      categories=data.categories)
        self.classes = self.train_set.classes

    def build_model(self):
        model_config = self.config.model
        try:
            model = build_model(
                "deeplab", backbone=model_config.backbone,
                output_stride=model_config.output_stride, num_classes=len(self.classes),
                multi_grid=model_config.multi_grid, depthwise_layout=model_config.depthwise_layout,
                atrous_rates=model_config.atrous_rates, separable=model_config.separable,
                decoder=model_config.decoder, dropout=model_config.dropout,
                batch_norm_momentum=model_config.batch_norm_momentum,
                dtype=self.config.trainer.precision)
        except ValueError as e:
            raise UserError(f"model: {str(e).splitlines()[0]}") from None
        configure_batch_norms(model, trainable=model_config.fine_tune_batch_norm)
        return model

    def warm_start(self, model):
        """The backbone must come whole from `init.weights`; the head when it matches;
        the logits only with `init.last_layer` and the same classes."""
        init = self.config.init
        if not init.weights:
            return None
        backbone = tuple(layer.name for layer in model.backbone.layers if layer.weights)
        if not init.last_layer:
            return WarmStart(init.weights, required=backbone, skip=(LOGITS,))

        def check(source):
            if LOGITS not in {layer.name for layer in source.layers}:
                raise UserError(f"{init.weights}: has no {LOGITS} layer to copy (init.last_layer)")
            if source.num_classes != model.num_classes:
                raise UserError(f"{init.weights}: the checkpoint has {source.num_classes} classes "
                                f"but the class list has {model.num_classes}; set "
                                "init.last_layer=false to start the logits afresh")
        return WarmStart(init.weights, required=(*backbone, LOGITS), check=check)

    def train_dataset(self, input_context, batch_size):
        data = self.config.data
        source = data.tfrecords or self.train_set
        return pipeline.train_dataset(
            source, batch_size, tuple(data.crop_size), data.min_scale, data.max_scale,
            data.scale_step, data.flip, input_context)

    def eval_dataset(self, batch_size):
        """The validation split padded to `eval_crop_size`, in order, for in-training summaries.

        The `evaluate` command measures at each image's own size; this is the quick view.
        """
        data = self.config.data
        val_set = load_dataset(data.format, data.root, data.val_split, categories=data.categories)
        height, width = data.eval_crop_size

        def load(image_bytes, label_bytes):
            image, label = records.decode(image_bytes, label_bytes)
            return augment.eval_pad(image, label, (height, width))

        return (records.memory_pairs(val_set).map(load, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size))

    def loss(self, labels, outputs):
        """Softmax cross-entropy on logits at the label size, averaged over non-ignored pixels."""
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=IGNORE_LABEL)(labels, outputs)

    def metrics(self):
        return [keras.metrics.MeanIoU(len(self.classes), name="mean_iou", ignore_class=IGNORE_LABEL,
                                      sparse_y_pred=False)]
