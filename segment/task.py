"""Semantic segmentation as a task for the shared trainer: data, model, loss, metrics.

Its data comes as tf.data datasets for the TensorFlow trainer and as
`keras.utils.PyDataset`s (`segment.batches`, no TensorFlow) for the JAX
trainer; TensorFlow is imported only by the former.
"""

import keras

from deeplab_xception.models.deeplab import DeepLabV3Plus
from deeplab_xception.errors import UserError
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.training import WarmStart
from deeplab_xception.training.model import build_configured
from deeplab_xception.segment import synthetic
from deeplab_xception.segment.datasets import load_dataset

LOGITS = DeepLabV3Plus.LOGITS


class SegmentationTask:
    """DeepLabv3+ fine-tuning as the paper does it (see `SegmentConfig` for the knobs)."""

    def __init__(self, config):
        self.config = config
        data = config.data
        # A bad model.* value fails before any data is read.
        self._architecture(num_classes=config.model.num_classes or 2)
        if data.synthetic:
            synthetic.write_unless_there(data.root)
        self.train_set = load_dataset(data.format, data.root, data.train_split,
                                      categories=data.categories)
        self.classes = self.train_set.classes
        self._train_files = self._val = None  # header checks, done once per process

    def _architecture(self, num_classes):
        return build_configured(self.config.model, "deeplab", num_classes=num_classes,
                                dtype=self.config.trainer.dtype_policy)

    def build_model(self):
        return self._architecture(len(self.classes))

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
        from deeplab_xception.segment import pipeline

        data = self.config.data
        if not data.tfrecords and self._train_files is None:
            self._train_files = self.train_set.file_list(progress=True)
        return pipeline.train_dataset(
            data.tfrecords or self.train_set, batch_size, tuple(data.crop_size), data.min_scale,
            data.max_scale, data.scale_step, data.flip, input_context, files=self._train_files)

    def eval_dataset(self, batch_size):
        """The validation split padded to `eval_crop_size`, in order, for in-training summaries.

        Streamed from the folder on every pass; the split is listed and its headers
        checked once per process. The `evaluate` command runs the full protocol;
        this is the quick view.
        """
        import tensorflow as tf

        from deeplab_xception.segment import augment, pipeline

        data = self.config.data
        val_set, files = self._val_split()
        crop = tuple(data.eval_crop_size)
        return (pipeline.decoded_examples(val_set, files=files)
                .map(lambda image, label: augment.eval_pad(image, label, crop),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size).prefetch(tf.data.AUTOTUNE))

    def _val_split(self):
        """The validation split and its FileList, listed and checked once per process."""
        if self._val is None:
            data = self.config.data
            val_set = load_dataset(data.format, data.root, data.val_split,
                                   categories=data.categories)
            self._val = val_set, val_set.file_list(progress=True)
        return self._val

    def train_batches(self, batch_size, seed):
        """The JAX trainer's input: `segment.batches.TrainBatches` over the dataset folder."""
        from deeplab_xception.segment.batches import TrainBatches

        data = self.config.data
        if data.tfrecords:
            raise UserError(f"data.tfrecords: {data.tfrecords!r}: TFRecords need TensorFlow; "
                            'the JAX trainer reads the dataset folder (data.tfrecords="")')
        if self._train_files is None:
            self._train_files = self.train_set.file_list(progress=True)  # headers checked once
        return TrainBatches(self.train_set, batch_size, data.crop_size, data.min_scale,
                            data.max_scale, data.scale_step, data.flip, seed=seed,
                            workers=data.workers)

    def eval_batches(self, batch_size):
        """The JAX trainer's view of the validation split: `segment.batches.EvalBatches`."""
        from deeplab_xception.segment.batches import EvalBatches

        val_set, _ = self._val_split()
        return EvalBatches(val_set, batch_size, self.config.data.eval_crop_size)

    def loss(self, labels, outputs):
        """Softmax cross-entropy on logits at the label size, averaged over non-ignored pixels."""
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=IGNORE_LABEL)(labels, outputs)

    def metrics(self):
        return [keras.metrics.MeanIoU(len(self.classes), name="mean_iou", ignore_class=IGNORE_LABEL,
                                      sparse_y_pred=False)]
