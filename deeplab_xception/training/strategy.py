"""The distribution strategy a TrainerConfig names."""

import tensorflow as tf

from deeplab_xception.errors import UserError
from deeplab_xception.training import cluster

# Variables smaller than this stay whole on one PS; larger ones are split.
MIN_SHARD_BYTES = 256 << 10


def make_strategy(config):
    """default: this process's one device; mirrored: its local devices, synchronously;
    multi_worker: every worker in TF_CONFIG, synchronously; parameter_server:
    asynchronous updates on variables held by the PS tasks, this process coordinating."""
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    jobs = cluster.tf_config().get("cluster", {})
    if config.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not jobs.get("ps") or not jobs.get("worker"):
        raise UserError("strategy parameter_server: TF_CONFIG must list ps and worker tasks "
                        "(or use --local-cluster workers=N,ps=M)")
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=MIN_SHARD_BYTES, max_shards=config.num_ps_shards or len(jobs["ps"]))
    return tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner)
