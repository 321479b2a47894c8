"""The one training loop: single process, synchronous replicas, or asynchronous parameter servers.

Sections: input, model, optimizer, step, checkpoint, loop. The same step
function runs under every strategy; only its dispatch differs (a direct call,
or `ClusterCoordinator.schedule` on whichever worker is free).
"""

import glob
import math
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
from deeplab_xception.io import atomic_path, write_json
from deeplab_xception.models.layers import configure_batch_norms
from deeplab_xception.training import cluster, sidecar, state
from deeplab_xception.training.config import FINAL_MODEL
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
    replicas = strategy.num_replicas_in_sync
    total_steps = config.total_steps(replicas)
    steps_per_epoch = (config.steps_per_epoch(replicas) if config.examples_per_epoch
                       else float(total_steps))
    chief = cluster.is_chief()
    write_dir = config.model_dir if chief else tempfile.mkdtemp(prefix="worker-")
    final_marker = os.path.join(config.model_dir, sidecar.FINAL_STEP)

    # -- input ----------------------------------------------------------------
    def dataset_fn(input_context):
        return task.train_dataset(input_context, config.batch_size_per_replica)

    if asynchronous:
        coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
        iterator = iter(coordinator.create_per_worker_dataset(
            lambda: strategy.distribute_datasets_from_function(dataset_fn)))
    else:
        iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    # -- model and optimizer --------------------------------------------------
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = task.build_model()
        # The step lives with the variables (on the PS) and drives the schedule.
        step = state.step_variable()
        optimizer = make_optimizer(config, lambda: learning_rate(
            config.learning_rate, step[0], steps_per_epoch, total_steps))
        if config.dtype_policy == "mixed_float16":
            # float16 gradients underflow; the dynamic loss scale keeps them in range.
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    if replicas > 1 and not asynchronous and config.synchronized_batch_norm:
        configure_batch_norms(model, synchronized=True)
    kernels = decayed_kernels(model)

    # -- step -----------------------------------------------------------------
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

    # -- checkpoint -----------------------------------------------------------
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                         max_to_keep=config.keep_checkpoints)
    # Where the starting weights come from: see training/start.py.
    latest = state.resume_point(config.model_dir)
    if not latest and glob.glob(os.path.join(glob.escape(config.model_dir), "ckpt-*.weights.h5")):
        raise UserError(f"{config.model_dir}: holds checkpoints of the JAX trainer; resume it "
                        "with KERAS_BACKEND=jax, or give another trainer.model_dir")
    warm_start = None if latest else warm_start_of(task, model, config)
    if latest:
        state.restore(checkpoint, latest)
        if chief:
            print(f"resuming from {latest} at step {state.value(step)}", flush=True)
    elif warm_start:
        apply_warm_start(model, warm_start)
    if chief and os.path.exists(final_marker):
        os.remove(final_marker)  # an earlier run's end; this run writes its own

    # -- loop -----------------------------------------------------------------
    writer = tf.summary.create_file_writer(os.path.join(write_dir, "train"))
    start = state.value(step)
    # Keras' bar on a terminal; in a log (no terminal), one plain line per summary instead
    # of its ANSI codes.
    on_terminal = sys.stdout.isatty()
    progress = keras.utils.Progbar(total_steps, stateful_metrics=["loss", "lr", "img/s"],
                                   verbose=1 if chief and on_terminal else 0)
    progress.update(start)
    global_batch = config.batch_size_per_replica * replicas
    mark_step, mark_time = start, time.time()

    def report(number, loss, blocked):
        """Summaries of step `number`, whose loss the loop waited `blocked` seconds to read;
        images/s counts the steps done since the last report."""
        nonlocal mark_step, mark_time
        now_step = state.value(step)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {number}")
        rate = (now_step - mark_step) * global_batch / max(time.time() - mark_time, 1e-9)
        lr = float(learning_rate(config.learning_rate, number, steps_per_epoch, total_steps))
        with writer.as_default(step=number):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_second", rate)
            tf.summary.scalar("summary_wait_seconds", blocked)
        writer.flush()
        progress.update(number, [("loss", loss), ("lr", lr), ("img/s", rate)])
        if chief and not on_terminal:
            print(f"step {number}/{total_steps}: loss {loss:.4f}, lr {lr:.4g}, {rate:.1f} img/s",
                  flush=True)
        mark_step, mark_time = now_step, time.time()

    saved_at = time.time()

    def save():
        nonlocal saved_at
        manager.save(checkpoint_number=state.value(step))
        saved_at = time.time()

    def checkpoint_due(i):
        every_seconds = config.checkpoint_every_seconds
        return i % config.checkpoint_every == 0 or (
            every_seconds > 0 and time.time() - saved_at >= every_seconds)

    lagging = None  # asynchronous: (step, loss) of the last summary, not read yet
    try:
        for i in range(start + 1, total_steps + 1):
            number = tf.constant(i, tf.int64)
            loss = (coordinator.schedule(train_step, args=(iterator, number)) if asynchronous
                    else train_step(iterator, number))
            if i % config.summary_every == 0 or i == total_steps:
                summary = (i, loss)
                if asynchronous:
                    # Read the previous summary's loss, scheduled summary_every steps
                    # ago and almost surely done: the newest one would wait for the
                    # whole queue, idling every worker at each summary.
                    lagging, summary = summary, lagging
                if summary:
                    asked = time.time()
                    value = float(summary[1].fetch() if asynchronous else summary[1])
                    report(summary[0], value, time.time() - asked)
            if i < total_steps and checkpoint_due(i):
                save()
        if asynchronous:
            coordinator.join()
            if lagging:
                report(lagging[0], float(lagging[1].fetch()), 0.0)
        save()
    except KeyboardInterrupt:
        # Synchronous workers save together, so only their step's own end could; the
        # chief of any other strategy saves what it has. A second Ctrl-C ends the save.
        if chief and config.strategy != "multi_worker":
            print(f"\ninterrupted: saving step {state.value(step)} (Ctrl-C again to skip)",
                  flush=True)
            save()
            print(f"saved {manager.latest_checkpoint}; the same command resumes from it", flush=True)
        raise
    except Exception as e:
        lost = asynchronous and lost_parameter_server(e, config.model_dir)
        if not lost:
            raise
        raise lost from None
    if chief:
        with atomic_path(os.path.join(config.model_dir, FINAL_MODEL)) as tmp:
            model.save(tmp)
        write_json(final_marker, {"step": state.value(step)})
    else:
        shutil.rmtree(write_dir, ignore_errors=True)
    return state.value(step)
