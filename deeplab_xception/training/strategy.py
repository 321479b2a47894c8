"""The distribution strategy a TrainerConfig names."""

import tensorflow as tf

from deeplab_xception.errors import UserError
from deeplab_xception.training import cluster

_made = {}


def make_strategy(config):
    """This process's strategy for `config.strategy`, made once.

    Call it before anything else runs TensorFlow ops when the strategy is
    multi_worker: collectives can only be configured at start-up.

    default: this process's one device; mirrored: its local devices, synchronously;
    multi_worker: every worker in TF_CONFIG, synchronously; parameter_server:
    asynchronous updates on variables held by the PS tasks, this process coordinating."""
    if config.strategy not in _made:
        _made[config.strategy] = _new_strategy(config)
    return _made[config.strategy]


def _new_strategy(config):
    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    jobs = cluster.tf_config().get("cluster", {})
    if config.strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not jobs.get("ps") or not jobs.get("worker"):
        raise UserError("strategy parameter_server: TF_CONFIG must list ps and worker tasks "
                        "(or run the job as a local cluster, training.launcher)")
    silent = cluster.silent_tasks()
    if silent:
        print(f"waiting for {', '.join(silent)} to answer (not reachable yet; check that they "
              "run and TF_CONFIG's addresses)", flush=True)
    # No variable partitioner: Keras 3 variables cannot wrap the ShardedVariable
    # it makes. Whole variables go round-robin over the PS tasks, so the PS
    # tasks listed in TF_CONFIG are the shards.
    return tf.distribute.ParameterServerStrategy(
        tf.distribute.cluster_resolver.TFConfigClusterResolver())
