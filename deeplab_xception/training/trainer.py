"""The one training loop: single process, synchronous replicas, or asynchronous parameter servers.

`train` runs the stages in order: input, model, optimizer, step, checkpoint,
report, loop. The same step function runs under every strategy; only its
dispatch differs (a direct call, or `ClusterCoordinator.schedule` on whichever
worker is free).
"""

import dataclasses
import glob
import os
import re
import shutil
import socket
import sys
import tempfile
import time

import keras
import tensorflow as tf

from deeplab_xception.errors import ClusterLost, UserError
from deeplab_xception.models.layers import configure_batch_norms
from deeplab_xception.training import cluster, loop, sidecar, state
from deeplab_xception.training.optimization import (
    decayed_kernels, learning_rate, make_optimizer, weight_decay)
from deeplab_xception.training.start import apply_warm_start, warm_start_of
from deeplab_xception.training.strategy import make_strategy

PS_TASK = re.compile(r"/job:ps/replica:\d+/task:(\d+)")


def _unreachable_ps(addresses):
    """(index, address) of the first PS that refuses connections, or None."""
    for index, address in enumerate(addresses):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            return index, address
    return None


def lost_parameter_server(error, model_dir):
    """The ClusterLost naming the PS behind `error` and the checkpoint to resume from, or None.

    Under the parameter-server strategy the coordinator retries every worker
    failure itself, so an unavailable or aborted task that still reaches the
    chief is a PS, whose variables are gone with it. A dead PS also surfaces
    as other errors of the closures that were using it, hence the probe.
    """
    error = getattr(error, "original_exception", error)
    addresses = cluster.tf_config().get("cluster", {}).get("ps", [])
    gone = _unreachable_ps(addresses)
    match = PS_TASK.search(str(error))
    if gone is None and match and int(match.group(1)) < len(addresses):
        gone = int(match.group(1)), addresses[int(match.group(1))]
    if gone is None and not isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError)):
        return None
    who = f"parameter server ps/{gone[0]} at {gone[1]}" if gone else "a parameter server"
    latest = tf.train.latest_checkpoint(model_dir)
    resume = (f"resume from checkpoint {os.path.basename(latest)}" if latest
              else "no checkpoint yet: the restart begins at step 0")
    return ClusterLost(f"{who} is gone; {resume} (restart the whole job)")


def prepare(config):
    """Call before building the task: a multi_worker process joins its collective group
    before any TensorFlow op runs (the task may read data to check it)."""
    config.validate()
    if config.strategy == "multi_worker" and cluster.role()[0] != "evaluator":
        make_strategy(config)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process's part of the job runs."""
    strategy: tf.distribute.Strategy
    coordinator: object  # a ClusterCoordinator under the parameter-server strategy, else None
    chief: bool
    write_dir: str       # model_dir on the chief, a scratch folder on other workers

    @property
    def asynchronous(self):
        return self.coordinator is not None

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync


# -- input ---------------------------------------------------------------------

def train_input(task, config, placement):
    """An iterator over the task's training batches, distributed by the strategy (one per
    worker under the parameter-server strategy)."""
    strategy = placement.strategy

    def dataset_fn(input_context):
        return task.train_dataset(input_context, config.batch_size_per_replica)

    if placement.asynchronous:
        return iter(placement.coordinator.create_per_worker_dataset(
            lambda: strategy.distribute_datasets_from_function(dataset_fn)))
    return iter(strategy.distribute_datasets_from_function(dataset_fn))


# -- model ---------------------------------------------------------------------

def initialized_model(task, config, placement):
    """The task's model, built from the config's seed in the strategy's scope; synchronous
    replicas share their batch-norm statistics when the config asks."""
    keras.utils.set_random_seed(config.seed)
    with placement.strategy.scope():
        model = task.build_model()
    if placement.replicas > 1 and not placement.asynchronous and config.synchronized_batch_norm:
        configure_batch_norms(model, synchronized=True)
    return model


# -- optimizer -----------------------------------------------------------------

def optimizer_for(config, placement, model, step, steps):
    """The config's optimizer over `model`, its learning rate read off the global `step`."""
    with placement.strategy.scope():
        optimizer = make_optimizer(config, lambda: learning_rate(
            config.learning_rate, step[0], steps.steps_per_epoch, steps.total_steps))
        if config.dtype_policy == "mixed_float16":
            # float16 gradients underflow; the dynamic loss scale keeps them in range.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    return optimizer


# -- step ----------------------------------------------------------------------

def train_step_function(task, config, placement, model, optimizer, step):
    """The tf.function that runs one step on every replica and returns the mean loss."""
    strategy, replicas, asynchronous = placement.strategy, placement.replicas, placement.asynchronous
    kernels = decayed_kernels(model)

    def step_fn(features, labels, number):
        with tf.GradientTape() as tape:
            # Mixed precision: the models' logits are float32, so is the loss.
            outputs = model(features, training=True)
            loss = task.loss(labels, outputs)
            scaled = (loss + weight_decay(kernels, config.weight_decay)) / replicas
            if config.dtype_policy == "mixed_float16":
                scaled = optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        state.advance(step, number, asynchronous)
        return loss

    @tf.function
    def train_step(iterator, number):
        losses = strategy.run(step_fn, args=(*next(iterator), number))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return train_step


# -- checkpoint ----------------------------------------------------------------

def checkpoint_manager(config, placement, model, optimizer, step):
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    return tf.train.CheckpointManager(checkpoint, placement.write_dir,
                                      max_to_keep=config.keep_checkpoints)


def start_weights(task, config, placement, model, manager, step):
    """Where the starting weights come from (see training/start.py): the latest checkpoint
    in model_dir, else the warm start, else the model's own initialization."""
    latest = state.resume_point(config.model_dir)
    if not latest and glob.glob(os.path.join(glob.escape(config.model_dir), "ckpt-*.weights.h5")):
        raise UserError(f"{config.model_dir}: holds checkpoints of the JAX trainer; resume it "
                        "with KERAS_BACKEND=jax, or give another trainer.model_dir")
    warm_start = None if latest else warm_start_of(task, model, config)
    if latest:
        state.restore(manager.checkpoint, latest)
        if placement.chief:
            print(f"resuming from {latest} at step {state.value(step)}", flush=True)
    elif warm_start:
        apply_warm_start(model, warm_start)


# -- report --------------------------------------------------------------------

def train_reporter(config, placement, steps, start):
    """A `loop.Reporter` writing tf.summary scalars under <write_dir>/train: Keras' bar on a
    terminal; in a log (no terminal), one plain line per summary instead of its ANSI codes."""
    writer = tf.summary.create_file_writer(os.path.join(placement.write_dir, "train"))

    def write(number, values):
        with writer.as_default(step=number):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)
        writer.flush()

    on_terminal = sys.stdout.isatty()
    return loop.Reporter(config, steps, start, write,
                         verbose=1 if placement.chief and on_terminal else 0,
                         plain=placement.chief and not on_terminal)


def read_and_report(report, placement, step, summary):
    """Waits for the loss of `summary` (step, loss) and reports it with the time waited."""
    asked = time.time()
    value = float(summary[1].fetch() if placement.asynchronous else summary[1])
    blocked = time.time() - asked
    report(summary[0], value, done=state.value(step), summary_wait_seconds=blocked)


# -- loop ----------------------------------------------------------------------

def run_steps(config, placement, steps, train_step, iterator, step, save, report):
    """Steps from the one after `step` to the last, reporting every summary_every steps and
    saving when a checkpoint is due; the last step is saved by the caller."""
    clock = loop.CheckpointClock(config)
    lagging = None  # asynchronous: (step, loss) of the last summary, not read yet
    for i in range(state.value(step) + 1, steps.total_steps + 1):
        number = tf.constant(i, tf.int64)
        loss = (placement.coordinator.schedule(train_step, args=(iterator, number))
                if placement.asynchronous else train_step(iterator, number))
        if i % config.summary_every == 0 or i == steps.total_steps:
            summary = (i, loss)
            if placement.asynchronous:
                # Read the previous summary's loss, scheduled summary_every steps
                # ago and almost surely done: the newest one would wait for the
                # whole queue, idling every worker at each summary.
                lagging, summary = summary, lagging
            if summary:
                read_and_report(report, placement, step, summary)
        if i < steps.total_steps and clock.due(i):
            save()
            clock.saved()
    if placement.asynchronous:
        placement.coordinator.join()
        if lagging:
            report(lagging[0], float(lagging[1].fetch()), done=state.value(step),
                   summary_wait_seconds=0.0)


def run_loop(config, placement, steps, train_step, iterator, step, manager, report):
    """`run_steps` and the last checkpoint; on Ctrl-C the chief saves where it can, and a lost
    parameter server becomes a ClusterLost naming it."""
    def save():
        manager.save(checkpoint_number=state.value(step))

    try:
        run_steps(config, placement, steps, train_step, iterator, step, save, report)
        save()
    except KeyboardInterrupt:
        # Synchronous workers save together, so only their step's own end could; the
        # chief of any other strategy saves what it has. A second Ctrl-C ends the save.
        if placement.chief and config.strategy != "multi_worker":
            print(f"\ninterrupted: saving step {state.value(step)} (Ctrl-C again to skip)",
                  flush=True)
            save()
            print(f"saved {manager.latest_checkpoint}; the same command resumes from it", flush=True)
        raise
    except Exception as e:
        lost = placement.asynchronous and lost_parameter_server(e, config.model_dir)
        if not lost:
            raise
        raise lost from None


def train(task, config):
    """Runs this process's part of the job that TF_CONFIG describes.

    Chief (or a lone process): trains to `total_steps`, writing checkpoints,
    summaries under `<model_dir>/train` and, at the end, `<model_dir>/model.keras`;
    returns the final step. Under the parameter-server strategy, "worker" and
    "ps" processes serve until killed. "evaluator" evaluates each checkpoint.
    Multi-worker mirrored workers train in lockstep with the chief.
    """
    config.validate()
    task_type, _ = cluster.role()
    if task_type == "evaluator":
        return sidecar.run_sidecar_evaluator(task, config)
    if task_type in ("worker", "ps") and config.strategy == "parameter_server":
        cluster.serve_forever()
    strategy = make_strategy(config)
    asynchronous = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    steps = loop.steps(config, strategy.num_replicas_in_sync)
    chief = cluster.is_chief()
    placement = Placement(
        strategy, tf.distribute.coordinator.ClusterCoordinator(strategy) if asynchronous else None,
        chief, config.model_dir if chief else tempfile.mkdtemp(prefix="worker-"))

    iterator = train_input(task, config, placement)
    model = initialized_model(task, config, placement)
    with strategy.scope():
        step = state.step_variable()  # with the variables (on the PS); drives the schedule
    optimizer = optimizer_for(config, placement, model, step, steps)
    train_step = train_step_function(task, config, placement, model, optimizer, step)
    manager = checkpoint_manager(config, placement, model, optimizer, step)
    start_weights(task, config, placement, model, manager, step)
    if chief:
        loop.clear_final_step(config.model_dir)
    report = train_reporter(config, placement, steps, state.value(step))
    run_loop(config, placement, steps, train_step, iterator, step, manager, report)
    if chief:
        loop.write_final_model(config.model_dir, model, state.value(step))
    else:
        shutil.rmtree(placement.write_dir, ignore_errors=True)
    return state.value(step)
