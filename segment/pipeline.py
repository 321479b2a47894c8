"""The one tf.data pipeline for training, fed by TFRecord shards or by a set read into memory."""

import tensorflow as tf

from deeplab_xception.errors import UserError
from segment import augment, records

SHUFFLE_BUFFER = 1000


def tfrecord_files(pattern):
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise UserError(f"{pattern}: no TFRecord files match")
    return files


def encoded_pairs(source, input_context=None):
    """This input pipeline's share of (image bytes, label bytes).

    `source` is a TFRecord file pattern or a SegmentationSet. Shards are
    shuffled without a seed, so asynchronous workers read in their own orders.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    if isinstance(source, str):
        files = tfrecord_files(source)
        if len(files) >= num_pipelines:
            shards = tf.data.Dataset.from_tensor_slices(files).shard(num_pipelines, pipeline_id)
            shards = shards.shuffle(len(files))
            return shards.interleave(tf.data.TFRecordDataset,
                                     num_parallel_calls=tf.data.AUTOTUNE).map(records.parse)
        pairs = tf.data.TFRecordDataset(files).map(records.parse)
    else:
        pairs = records.memory_pairs(source)
    return pairs.shard(num_pipelines, pipeline_id)


def train_dataset(source, batch_size, crop_size, min_scale=0.5, max_scale=2.0, scale_step=0.25,
                  flip=True, input_context=None):
    """Infinite shuffled batches of `batch_size` (preprocessed crops, int32 labels) for one replica."""
    def load(image_bytes, label_bytes):
        image, label = records.decode(image_bytes, label_bytes)
        return augment.train_augment(image, label, crop_size, min_scale, max_scale, scale_step,
                                     flip)

    pairs = encoded_pairs(source, input_context)
    return (pairs.shuffle(SHUFFLE_BUFFER).repeat()
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))
