"""The training loop on the JAX backend: one device, or every local device in data parallel.

The stages of trainer.py (input, model, optimizer, step, checkpoint, eval and
report, loop), with the bookkeeping both share in `loop.py`, and the same
recipe: the task's model, loss and data contract, the config's momentum SGD,
learning-rate schedule (`optimization.py`, in keras.ops) and slim weight
decay, the starting weights of `start.py`, summaries and the model_dir
layout. What differs is the engine: `jax.jit` over Keras's
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
from deeplab_xception.training import loop
from deeplab_xception.training.config import EVAL_RESULTS
from deeplab_xception.training.optimization import (
    StepSchedule, decayed_kernels, make_optimizer, weight_decay)
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


def placement(config):
    """(devices this run trains on, the DataParallel distribution over them or None)."""
    devices = jax.local_devices()[:None if config.strategy == "mirrored" else 1]
    if len(devices) > 1 and not config.synchronized_batch_norm:
        raise UserError("synchronized_batch_norm: false is not available under JAX, whose "
                        "batch norm always computes its statistics over the global batch")
    distribution = None
    if len(devices) > 1:
        distribution = keras.distribution.DataParallel(
            devices=[f"{d.platform}:{d.id}" for d in devices])
        keras.distribution.set_distribution(distribution)
    return devices, distribution


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


def train_input(task, config, steps, start):
    """The task's training batches from step `start` on, prefetched."""
    return prefetched(task.train_batches(steps.global_batch, config.seed), first=start)


# -- model ---------------------------------------------------------------------

def initialized_model(task, config):
    keras.utils.set_random_seed(config.seed)
    return task.build_model()


# -- optimizer -----------------------------------------------------------------

def optimizer_for(config, model, steps):
    """The config's optimizer over `model`, its learning rate read off its own update count.

    Attached as after compile(): save_weights and load_weights then carry the optimizer's
    variables (momentum and the update count, which is the step) beside the model's.
    """
    optimizer = make_optimizer(config, StepSchedule(config.learning_rate, steps.steps_per_epoch,
                                                    steps.total_steps))
    optimizer.build(model.trainable_variables)
    model.optimizer = optimizer
    return optimizer


# -- step ----------------------------------------------------------------------

def variables_state(model, optimizer):
    """The functional state the jitted step takes and returns: (trainable, non-trainable,
    optimizer) variable values."""
    return ([v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables])


def sync_variables(model, optimizer, state):
    """Writes the functional state back into the Keras variables (to save or evaluate)."""
    for variables, values in zip((model.trainable_variables, model.non_trainable_variables,
                                  optimizer.variables), state):
        for variable, value in zip(variables, values):
            variable.assign(value)


def train_step_function(task, config, model, optimizer, network, steps, replicas):
    """step(state, features, labels) -> (state, loss): the task's loss on each device's share
    of the batch, averaged over devices, plus weight decay, and one optimizer update."""
    kernels = decayed_kernels(model)
    size = steps.global_batch // replicas

    def objective(trainable, non_trainable, features, labels):
        outputs, non_trainable = network.stateless_call(trainable, non_trainable, features,
                                                        training=True)
        loss = ops.mean(ops.stack([task.loss(labels[r * size:(r + 1) * size],
                                             outputs[r * size:(r + 1) * size])
                                   for r in range(replicas)]))
        with keras.StatelessScope(state_mapping=list(zip(model.trainable_variables, trainable))):
            decay = weight_decay(kernels, config.weight_decay)
        return loss + decay, (loss, non_trainable)

    gradient = jax.value_and_grad(objective, has_aux=True)

    def step_fn(state, features, labels):
        trainable, non_trainable, optimizer_state = state
        (_, (loss, non_trainable)), grads = gradient(trainable, non_trainable, features, labels)
        trainable, optimizer_state = optimizer.stateless_apply(optimizer_state, grads, trainable)
        return (trainable, non_trainable, optimizer_state), loss

    return step_fn


def jitted(step_fn, network, state, distribution, global_batch):
    """(jitted train step, jitted prediction, `put`: an array onto the devices as the
    distribution lays out data)."""
    def predict_fn(state, features):
        trainable, non_trainable, _ = state
        return network.stateless_call(trainable, non_trainable, features, training=False)[0]

    if not distribution:
        return jax.jit(step_fn), jax.jit(predict_fn), jax.device_put
    data_sharding = distribution.get_data_layout((global_batch,)).backend_layout
    replicated = jax.sharding.NamedSharding(data_sharding.mesh, jax.sharding.PartitionSpec())
    state_shardings = jax.tree.map(lambda value: value.sharding, state)

    def put(array):
        return jax.device_put(array, distribution.get_data_layout(array.shape).backend_layout)

    return (jax.jit(step_fn, out_shardings=(state_shardings, replicated)), jax.jit(predict_fn),
            put)


# -- checkpoint ----------------------------------------------------------------

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


def start_weights(task, config, model, optimizer):
    """Where the starting weights come from (see start.py): the latest checkpoint in
    model_dir, else the warm start, else the model's own initialization; returns the step."""
    found = checkpoints(config.model_dir)
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
    return int(optimizer.iterations.numpy())


class Checkpoints:
    """ckpt-<step>.weights.h5 files in model_dir, the newest `keep_checkpoints` kept."""

    def __init__(self, config, model, optimizer):
        self.model_dir, self.keep = config.model_dir, config.keep_checkpoints
        self.model, self.optimizer = model, optimizer
        self.saved = set(checkpoints(self.model_dir))

    def save(self, number, state):
        """ckpt-<number>.weights.h5, written beside and renamed; never over an existing one."""
        path = os.path.join(self.model_dir, f"ckpt-{number}.weights.h5")
        if os.path.exists(path):
            raise UserError(f"{path}: exists already; a checkpoint is never overwritten")
        sync_variables(self.model, self.optimizer, state)
        with atomic_path(path) as tmp:
            self.model.save_weights(tmp)
        self.saved.add(number)
        for old in sorted(self.saved)[:-self.keep]:
            os.remove(checkpoints(self.model_dir)[old])
            self.saved.discard(old)


# -- eval and report -----------------------------------------------------------

class Evaluation:
    """The task's metrics over its eval data at a step, written as the TF evaluator writes
    them: summaries under <model_dir>/eval and eval_results.json."""

    def __init__(self, task, config, predict, put, global_batch):
        self.task, self.predict, self.put, self.global_batch = task, predict, put, global_batch
        self.results_path = os.path.join(config.model_dir, EVAL_RESULTS)
        self.writer = ScalarWriter(os.path.join(config.model_dir, "eval"))

    def __call__(self, number, state):
        metrics = self.task.metrics()
        batches = self.task.eval_batches(self.global_batch)
        for index in range(len(batches)):
            features, labels = batches[index]
            outputs = self.predict(state, self.put(features))
            with warnings.catch_warnings():  # Keras's confusion matrix asks for int64 indices
                warnings.filterwarnings("ignore", "Explicitly requested dtype int64")
                for metric in metrics:
                    metric.update_state(labels, outputs)
        values = {metric.name: float(metric.result()) for metric in metrics}
        self.writer.scalars(number, values)
        results = {}
        if os.path.isfile(self.results_path):
            with open(self.results_path) as f:
                results = json.load(f)
        results[str(number)] = values
        write_json(self.results_path, results, indent=1)
        print(f"step {number}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)


# -- loop ----------------------------------------------------------------------

def run_loop(config, steps, start, state, train_step, put, batches, saver, evaluate, report):
    """Steps from `start` + 1 to the last, reporting every summary_every steps, saving (and
    evaluating, when the task has eval data) when a checkpoint is due, and saving the last
    step, also on Ctrl-C; returns (the last step done, its state)."""
    clock = loop.CheckpointClock(config)
    done = start
    try:
        for i in range(start + 1, steps.total_steps + 1):
            features, labels = next(batches)
            began = time.time()
            state, loss = train_step(state, put(features), put(labels))
            done = i
            if i == start + 1:
                loss.block_until_ready()
                print(f"\nfirst step (compilation included): {time.time() - began:.1f} s",
                      flush=True)
            if i % config.summary_every == 0 or i == steps.total_steps:
                report(i, float(loss))
            if i < steps.total_steps and clock.due(i):
                saver.save(i, state)
                clock.saved()
                if evaluate:
                    evaluate(i, state)
        if done not in saver.saved:
            saver.save(done, state)
    except KeyboardInterrupt:
        if done not in saver.saved:
            print(f"\ninterrupted: saving step {done} (Ctrl-C again to skip)", flush=True)
            saver.save(done, state)
        print(f"saved step {done}; the same command resumes from it", flush=True)
        raise
    finally:
        batches.close()
    return done, state


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
    _check_model_dir(config.model_dir)
    devices, distribution = placement(config)
    steps = loop.steps(config, len(devices))
    os.makedirs(config.model_dir, exist_ok=True)
    loop.clear_final_step(config.model_dir)

    model = initialized_model(task, config)
    optimizer = optimizer_for(config, model, steps)
    start = start_weights(task, config, model, optimizer)
    # The step runs a copy whose depthwise convs are shifted multiply-adds (same variables,
    # in the same order): on a GPU XLA's grouped conv is slower and compiles for minutes.
    network = with_shifted_depthwise(model)
    state = variables_state(model, optimizer)
    train_step, predict, put = jitted(
        train_step_function(task, config, model, optimizer, network, steps, len(devices)),
        network, state, distribution, steps.global_batch)
    has_eval = hasattr(task, "eval_batches") and hasattr(task, "metrics")
    evaluate = Evaluation(task, config, predict, put, steps.global_batch) if has_eval else None
    writer = ScalarWriter(os.path.join(config.model_dir, "train"))
    report = loop.Reporter(config, steps, start, writer.scalars)
    saver = Checkpoints(config, model, optimizer)
    done, state = run_loop(config, steps, start, state, train_step, put,
                           train_input(task, config, steps, start), saver, evaluate, report)
    writer.close()
    if evaluate:
        evaluate(done, state)
        evaluate.writer.close()
    model.optimizer = None  # the final model is the network alone, as the TF trainer saves it
    loop.write_final_model(config.model_dir, model, done)
    return done
