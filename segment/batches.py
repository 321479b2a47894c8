"""Segmentation batches without TensorFlow: `keras.utils.PyDataset`s over the dataset readers.

What the JAX trainer reads (see `deeplab_xception.training.jax_trainer`):
files decoded by OpenCV and PIL (`SegmentationSet.read`, labels checked as
they are read), augmented by `segment.augment_numpy` under the tf.data
pipeline's contract. Batch `i` of the training stream is a pure function of
(seed, i): epoch `e` visits the examples in a permutation seeded by (seed, e),
and each batch's random scales, crops and flips are seeded by (seed, i), so
worker processes compute batches in any order and a resumed run continues
the data order exactly where it stopped.
"""

import math
import os

import keras
import numpy as np

from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.segment import augment_numpy

PERMUTATION, AUGMENTATION = 0, 1  # the two uses of the seed, kept apart


def default_workers():
    """One input process per core but the one that drives the accelerator."""
    return max(1, (os.cpu_count() or 2) - 1)


class TrainBatches(keras.utils.PyDataset):
    """Infinite (preprocessed crops float32 B x H x W x 3, int32 labels B x H x W) batches."""

    def __init__(self, dataset, batch_size, crop_size, min_scale=0.5, max_scale=2.0,
                 scale_step=0.25, flip=True, seed=0, workers=0, use_multiprocessing=True,
                 max_queue_size=8):
        super().__init__(workers=workers or default_workers(),
                         use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.dataset = dataset
        self.batch_size = batch_size
        self.crop_size = tuple(crop_size)
        self.augment = dict(min_scale=min_scale, max_scale=max_scale, scale_step=scale_step,
                            flip=flip)
        self.seed = seed

    @property
    def num_batches(self):
        return None  # infinite: the trainer counts steps

    def example_indices(self, index):
        """Which examples batch `index` holds."""
        count = len(self.dataset)
        positions = range(index * self.batch_size, (index + 1) * self.batch_size)
        orders = {}
        for position in positions:
            epoch = position // count
            if epoch not in orders:
                orders[epoch] = np.random.default_rng([self.seed, PERMUTATION, epoch]).permutation(count)
        return [int(orders[p // count][p % count]) for p in positions]

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, AUGMENTATION, index])
        images, labels = [], []
        for example in self.example_indices(index):
            image, label = self.dataset.read(example)
            image, label = augment_numpy.train_augment(image, label, self.crop_size, rng,
                                                       **self.augment)
            images.append(image)
            labels.append(label)
        return np.stack(images), np.stack(labels)


class EvalBatches(keras.utils.PyDataset):
    """One pass over a split in order, each image padded to the eval crop (mean pixel, ignore
    label) as `segment.augment.eval_pad` does; the last batch is filled up with examples whose
    every label is ignored, so that every batch has the same shape (one compiled program)."""

    def __init__(self, dataset, batch_size, crop_size, workers=0, use_multiprocessing=False):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing)
        self.dataset = dataset
        self.batch_size = batch_size
        self.crop_size = tuple(crop_size)

    @property
    def num_batches(self):
        return math.ceil(len(self.dataset) / self.batch_size)

    def __len__(self):
        return self.num_batches

    def __getitem__(self, index):
        if not 0 <= index < self.num_batches:
            raise IndexError(index)
        images = np.zeros((self.batch_size, *self.crop_size, 3), np.float32)  # the mean pixel
        labels = np.full((self.batch_size, *self.crop_size), IGNORE_LABEL, np.int32)
        first = index * self.batch_size
        for row, example in enumerate(range(first, min(first + self.batch_size, len(self.dataset)))):
            image, label = self.dataset.read(example)
            images[row], labels[row] = augment_numpy.eval_pad(image, label, self.crop_size)
        return images, labels
