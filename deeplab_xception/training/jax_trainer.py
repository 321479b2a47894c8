"""The training loop on the JAX backend: one device, or every local device in data parallel.

The sections of trainer.py (input, model, optimizer, step, checkpoint, loop)
and the same recipe: the task's model, loss and data contract, the config's
momentum SGD, learning-rate schedule (`optimization.py`, in keras.ops) and
slim weight decay, the starting weights of `start.py`, summaries and the
model_dir layout. What differs is the engine: `jax.jit` over Keras's
stateless calls instead of tf.function under a tf.distribute strategy,
`keras.distribution.DataParallel` instead of MirroredStrategy, numpy batches
from the task's `train_batches` PyDataset instead of tf.data, and Keras
checkpoints (`ckpt-<step>.weights.h5`: the model's and the optimizer's
variables) instead of tf.train.Checkpoint. Nothing here imports TensorFlow.

Data parallel as MirroredStrategy does it: each device's share of the batch
has its own mean loss, and the gradient is that of their mean; batch norm
computes its statistics over the whole batch (synchronized batch norm).
"""

import collections
import glob
import itertools
import json
import math
import multiprocessing
import os
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import jax
import keras
from keras import ops

from deeplab_xception.backend import enable_compilation_cache, keep_keras_off_tensorflow
from deeplab_xception.models.depthwise import with_shifted_depthwise
from deeplab_xception.errors import UserError
from deeplab_xception.io import atomic_path, write_json
from deeplab_xception.training.config import EVAL_RESULTS, FINAL_MODEL, FINAL_STEP
from deeplab_xception.training.optimization import (
    StepSchedule, decayed_kernels, learning_rate, make_optimizer, weight_decay)
from deeplab_xception.training.start import apply_warm_start, warm_start_of
from deeplab_xception.training.summaries import ScalarWriter

CHECKPOINT = re.compile(r"^ckpt-(\d+)\.weights\.h5$")
STRATEGIES = ("default", "mirrored")  # one device; every local device


def prepare(config):
    """Checks what this engine runs, and turns on the persistent compilation cache before
    anything compiles."""
    config.validate()
    if config.strategy not in STRATEGIES:
        raise UserError(f"strategy: {config.strategy} runs on TensorFlow only "
                        "(KERAS_BACKEND=tensorflow); under JAX use default (one device) or "
                        "mirrored (every local device)")
    if config.dtype_policy == "mixed_float16":
        raise UserError("dtype_policy: mixed_float16 (loss scaling) trains on TensorFlow only; "
                        "use mixed_bfloat16 under JAX")
    enable_compilation_cache()
    keep_keras_off_tensorflow()  # Keras would import it to seed and to save models


# -- checkpoints ---------------------------------------------------------------

def checkpoints(model_dir):
    """{step: path} of this engine's checkpoints in model_dir."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(model_dir), "ckpt-*.weights.h5")):
        match = CHECKPOINT.match(os.path.basename(path))
        if match:
            found[int(match.group(1))] = path
    return found


def _check_model_dir(model_dir):
    if os.path.isfile(os.path.join(model_dir, "checkpoint")):
        raise UserError(f"{model_dir}: holds TensorFlow checkpoints; resume it with "
                        "KERAS_BACKEND=tensorflow, or give another trainer.model_dir")


# -- input ---------------------------------------------------------------------

_DATASET = None  # a worker process's copy of the PyDataset


def _hold(dataset):
    global _DATASET
    _DATASET = dataset


def _item(index):
    return _DATASET[index]


def prefetched(dataset, first):
    """dataset[first], dataset[first + 1], ...: computed ahead, in order, by `dataset.workers`
    processes (or threads without `use_multiprocessing`).

    Processes start from a fork server, never forked from this process, whose JAX runtime
    runs threads that a fork would copy in any state.
    """
    if dataset.use_multiprocessing:
        executor = ProcessPoolExecutor(dataset.workers, initializer=_hold, initargs=(dataset,),
                                       mp_context=multiprocessing.get_context("forkserver"))
        fetch = _item
    else:
        executor = ThreadPoolExecutor(dataset.workers)
        fetch = dataset.__getitem__
    ahead = max(dataset.max_queue_size, dataset.workers)
    pending = collections.deque(executor.submit(fetch, i) for i in range(first, first + ahead))
    try:
        for index in itertools.count(first + ahead):
            batch = pending.popleft().result()
            pending.append(executor.submit(fetch, index))
            yield batch
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def train(task, config):
    """Trains `task` to `total_steps` in this process; returns the final step.

    Writes `ckpt-<step>.weights.h5` checkpoints (resumed at their exact step, the data
    order included), summaries under `<model_dir>/train` and `<model_dir>/eval`,
    `eval_results.json` (the task's metrics at every checkpoint, when it has eval data)
    and, at the end, `<model_dir>/model.keras`.
    """
    prepare(config)
    if not hasattr(task, "train_batches"):
        raise UserError(f"{type(task).__name__}: has no train_batches (input without "
                        "TensorFlow); it trains on TensorFlow only (KERAS_BACKEND=tensorflow)")
    model_dir = config.model_dir
    _check_model_dir(model_dir)
    devices = jax.local_devices()[:None if config.strategy == "mirrored" else 1]
    replicas = len(devices)
    if replicas > 1 and not config.synchronized_batch_norm:
        raise UserError("synchronized_batch_norm: false is not available under JAX, whose "
                        "batch norm always computes its statistics over the global batch")
    distribution = None
    if replicas > 1:
        distribution = keras.distribution.DataParallel(
            devices=[f"{d.platform}:{d.id}" for d in devices])
        keras.distribution.set_distribution(distribution)
    total_steps = config.total_steps(replicas)
    steps_per_epoch = (config.steps_per_epoch(replicas) if config.examples_per_epoch
                       else float(total_steps))
    global_batch = config.batch_size_per_replica * replicas
    os.makedirs(model_dir, exist_ok=True)
    final_marker = os.path.join(model_dir, FINAL_STEP)
    if os.path.exists(final_marker):
        os.remove(final_marker)  # an earlier run's end; this run writes its own

    # -- model and optimizer --------------------------------------------------
    keras.utils.set_random_seed(config.seed)
    model = task.build_model()
    optimizer = make_optimizer(config, StepSchedule(config.learning_rate, steps_per_epoch,
                                                    total_steps))
    optimizer.build(model.trainable_variables)
    # As after compile(): save_weights and load_weights then carry the optimizer's variables
    # (momentum and the update count, which is the step) beside the model's.
    model.optimizer = optimizer
    kernels = decayed_kernels(model)

    # -- checkpoint -----------------------------------------------------------
    # Where the starting weights come from: see start.py.
    found = checkpoints(model_dir)
    if found:
        latest = max(found)
        model.load_weights(found[latest])
        if int(optimizer.iterations.numpy()) != latest:
            raise UserError(f"{found[latest]}: holds step {int(optimizer.iterations.numpy())}, "
                            f"not {latest}")
        print(f"resuming from {found[latest]} at step {latest}", flush=True)
    else:
        warm_start = warm_start_of(task, model, config)
        if warm_start:
            apply_warm_start(model, warm_start)
    start = int(optimizer.iterations.numpy())

    # -- step -----------------------------------------------------------------
    # The step runs a copy whose depthwise convs are shifted multiply-adds (same variables,
    # in the same order): on a GPU XLA's grouped conv is slower and compiles for minutes.
    network = with_shifted_depthwise(model)

    def replica_mean(labels, outputs):
        """The task's loss on each device's share of the batch, averaged over devices."""
        size = global_batch // replicas
        return ops.mean(ops.stack([task.loss(labels[r * size:(r + 1) * size],
                                             outputs[r * size:(r + 1) * size])
                                   for r in range(replicas)]))

    def objective(trainable, non_trainable, features, labels):
        outputs, non_trainable = network.stateless_call(trainable, non_trainable, features,
                                                        training=True)
        loss = replica_mean(labels, outputs)
        with keras.StatelessScope(state_mapping=list(zip(model.trainable_variables, trainable))):
            decay = weight_decay(kernels, config.weight_decay)
        return loss + decay, (loss, non_trainable)

    gradient = jax.value_and_grad(objective, has_aux=True)

    def step_fn(state, features, labels):
        trainable, non_trainable, optimizer_state = state
        (_, (loss, non_trainable)), grads = gradient(trainable, non_trainable, features, labels)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return (trainable, non_trainable, optimizer_state), loss

    def predict_fn(state, features):
        trainable, non_trainable, _ = state
        return network.stateless_call(trainable, non_trainable, features, training=False)[0]

    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    if distribution:
        data_sharding = distribution.get_data_layout((global_batch,)).backend_layout
        replicated = jax.sharding.NamedSharding(data_sharding.mesh, jax.sharding.PartitionSpec())
        state_shardings = jax.tree.map(lambda value: value.sharding, state)
        train_step = jax.jit(step_fn, out_shardings=(state_shardings, replicated))

        def put(array):
            return jax.device_put(array, distribution.get_data_layout(array.shape).backend_layout)
    else:
        train_step = jax.jit(step_fn)
        put = jax.device_put
    predict = jax.jit(predict_fn)

    def sync_variables(state):
        """Writes the functional state back into the Keras variables (to save or evaluate)."""
        for variables, values in zip((model.trainable_variables, model.non_trainable_variables,
                                      optimizer.variables), state):
            for variable, value in zip(variables, values):
                variable.assign(value)

    # -- evaluation -----------------------------------------------------------
    results_path = os.path.join(model_dir, EVAL_RESULTS)
    has_eval = hasattr(task, "eval_batches") and hasattr(task, "metrics")
    eval_writer = ScalarWriter(os.path.join(model_dir, "eval")) if has_eval else None

    def evaluate(number, state):
        """The task's metrics over its eval data at step `number`, written as the TF
        evaluator writes them."""
        metrics = task.metrics()
        batches = task.eval_batches(global_batch)
        for index in range(len(batches)):
            features, labels = batches[index]
            outputs = predict(state, put(features))
            with warnings.catch_warnings():  # Keras's confusion matrix asks for int64 indices
                warnings.filterwarnings("ignore", "Explicitly requested dtype int64")
                for metric in metrics:
                    metric.update_state(labels, outputs)
        values = {metric.name: float(metric.result()) for metric in metrics}
        eval_writer.scalars(number, values)
        results = {}
        if os.path.isfile(results_path):
            with open(results_path) as f:
                results = json.load(f)
        results[str(number)] = values
        write_json(results_path, results, indent=1)
        print(f"step {number}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)

    # -- loop -----------------------------------------------------------------
    writer = ScalarWriter(os.path.join(model_dir, "train"))
    progress = keras.utils.Progbar(total_steps, stateful_metrics=["loss", "lr", "img/s"])
    progress.update(start)
    mark_step, mark_time = start, time.time()

    def report(number, loss):
        nonlocal mark_step, mark_time
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {number}")
        rate = (number - mark_step) * global_batch / max(time.time() - mark_time, 1e-9)
        lr = float(learning_rate(config.learning_rate, number, steps_per_epoch, total_steps))
        writer.scalars(number, {"loss": loss, "learning_rate": lr, "images_per_second": rate})
        progress.update(number, [("loss", loss), ("lr", lr), ("img/s", rate)])
        mark_step, mark_time = number, time.time()

    saved = set(checkpoints(model_dir))
    saved_at = time.time()

    def save(number, state):
        """ckpt-<number>.weights.h5, written beside and renamed; never over an existing one."""
        nonlocal saved_at
        path = os.path.join(model_dir, f"ckpt-{number}.weights.h5")
        if os.path.exists(path):
            raise UserError(f"{path}: exists already; a checkpoint is never overwritten")
        sync_variables(state)
        with atomic_path(path) as tmp:
            model.save_weights(tmp)
        saved.add(number)
        for old in sorted(saved)[:-config.keep_checkpoints]:
            os.remove(checkpoints(model_dir)[old])
            saved.discard(old)
        saved_at = time.time()

    def checkpoint_due(i):
        every_seconds = config.checkpoint_every_seconds
        return i % config.checkpoint_every == 0 or (
            every_seconds > 0 and time.time() - saved_at >= every_seconds)

    batches = prefetched(task.train_batches(global_batch, config.seed), first=start)
    done = start
    try:
        for i in range(start + 1, total_steps + 1):
            features, labels = next(batches)
            began = time.time()
            state, loss = train_step(state, put(features), put(labels))
            done = i
            if i == start + 1:
                loss.block_until_ready()
                print(f"\nfirst step (compilation included): {time.time() - began:.1f} s",
                      flush=True)
            if i % config.summary_every == 0 or i == total_steps:
                report(i, float(loss))
            if i < total_steps and checkpoint_due(i):
                save(i, state)
                if has_eval:
                    evaluate(i, state)
        if done not in saved:
            save(done, state)
    except KeyboardInterrupt:
        if done not in saved:
            print(f"\ninterrupted: saving step {done} (Ctrl-C again to skip)", flush=True)
            save(done, state)
        print(f"saved step {done}; the same command resumes from it", flush=True)
        raise
    finally:
        batches.close()
    writer.close()
    if has_eval:
        evaluate(done, state)
        eval_writer.close()
    model.optimizer = None  # the final model is the network alone, as the TF trainer saves it
    with atomic_path(os.path.join(model_dir, FINAL_MODEL)) as tmp:
        model.save(tmp)
    write_json(final_marker, {"step": done})
    return done
