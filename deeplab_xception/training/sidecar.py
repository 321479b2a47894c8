"""The sidecar evaluator (Keras' `SidecarEvaluator` role, TF_CONFIG type "evaluator"): the
task's metrics on its eval data for every new checkpoint."""

import json
import os

import tensorflow as tf

from deeplab_xception.errors import UserError
from deeplab_xception.io import write_json
from deeplab_xception.training import state
from deeplab_xception.training.config import EVAL_RESULTS as RESULTS
from deeplab_xception.training.config import FINAL_STEP, TrainerConfig
POLL_SECONDS = 2


def final_step(model_dir):
    """The step the chief ended at, or None while it trains."""
    try:
        with open(os.path.join(model_dir, FINAL_STEP)) as f:
            return int(json.load(f)["step"])
    except FileNotFoundError:
        return None


def evaluate_checkpoint(task, model, batch_size):
    """{metric name: value} of `model` over one pass of the eval data."""
    metrics = task.metrics()
    for features, labels in task.eval_dataset(batch_size):
        outputs = model(features, training=False)
        for metric in metrics:
            metric.update_state(labels, outputs)
    return {metric.name: float(metric.result()) for metric in metrics}


def run_sidecar_evaluator(task, config: TrainerConfig, timeout=None):
    """Waits for checkpoints in model_dir and evaluates each, until the chief's final one.

    Writes the metrics as summaries under `<model_dir>/eval` and, per step, to
    `<model_dir>/eval_results.json`; returns that dict keyed by step.
    `timeout` (seconds without a new checkpoint) ends the wait early.
    """
    if not hasattr(task, "eval_dataset") or not hasattr(task, "metrics"):
        raise UserError("the evaluator needs a task with eval_dataset and metrics")
    model = task.build_model()
    step = state.step_variable()
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    writer = tf.summary.create_file_writer(os.path.join(config.model_dir, "eval"))
    results_path = os.path.join(config.model_dir, RESULTS)
    results = {}
    if os.path.isfile(results_path):
        with open(results_path) as f:
            results = json.load(f)
    evaluated, idle = -1, 0.0

    def done():
        last = final_step(config.model_dir)
        return last is not None and evaluated >= last

    def stop_waiting():
        """Called after every POLL_SECONDS without a new checkpoint."""
        nonlocal idle
        idle += POLL_SECONDS
        return done() or (timeout is not None and idle >= timeout)

    for path in tf.train.checkpoints_iterator(config.model_dir, timeout=POLL_SECONDS,
                                              timeout_fn=stop_waiting):
        idle = 0.0
        checkpoint.restore(path).expect_partial()
        current = state.value(step)
        values = evaluate_checkpoint(task, model, config.batch_size_per_replica)
        with writer.as_default(step=current):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        writer.flush()
        results[str(current)] = values
        write_json(results_path, results, indent=1)
        print(f"step {current}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()), flush=True)
        evaluated = current
        if done():
            break
    return results
