"""What the two engines' loops share: the run's length, when a checkpoint is due, what a
report says, and the files that mark a run's end. Nothing here imports TensorFlow."""

import dataclasses
import math
import os
import time

import keras

from deeplab_xception.io import atomic_path, write_json
from deeplab_xception.training.config import FINAL_MODEL, FINAL_STEP
from deeplab_xception.training.optimization import learning_rate


@dataclasses.dataclass(frozen=True)
class Steps:
    """The run's length with `replicas` in sync (see `TrainerConfig`)."""
    total_steps: int
    steps_per_epoch: float  # the schedule's epoch; the whole run when epochs are not counted
    global_batch: int


def steps(config, replicas):
    total_steps = config.total_steps(replicas)
    steps_per_epoch = (config.steps_per_epoch(replicas) if config.examples_per_epoch
                       else float(total_steps))
    return Steps(total_steps, steps_per_epoch, config.batch_size_per_replica * replicas)


class CheckpointClock:
    """A checkpoint is due every `checkpoint_every` steps, and also `checkpoint_every_seconds`
    after the last one (when set); the clock starts with the loop."""

    def __init__(self, config):
        self.every, self.every_seconds = config.checkpoint_every, config.checkpoint_every_seconds
        self.saved_at = time.time()

    def saved(self):
        self.saved_at = time.time()

    def due(self, i):
        return i % self.every == 0 or (
            self.every_seconds > 0 and time.time() - self.saved_at >= self.every_seconds)


class Reporter:
    """The summaries and progress bar of a step: its loss (a non-finite loss is an error), the
    learning rate, and images/s over the steps done since the last report.

    `write(step, {tag: value})` writes the summaries; `verbose` is the progress bar's;
    `plain` prints one line per report instead (in a log, where the bar's codes are noise).
    """

    def __init__(self, config, steps, start, write, verbose=1, plain=False):
        self.config, self.steps, self.write, self.plain = config, steps, write, plain
        self.progress = keras.utils.Progbar(steps.total_steps, verbose=verbose,
                                            stateful_metrics=["loss", "lr", "img/s"])
        self.progress.update(start)
        self.mark_step, self.mark_time = start, time.time()

    def __call__(self, number, loss, done=None, **extra):
        """Reports step `number`; `done`: the steps finished by now (asynchronous workers run
        ahead of the step reported), `number` by default; `extra`: more scalars to write."""
        done = number if done is None else done
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {number}")
        rate = (done - self.mark_step) * self.steps.global_batch / max(time.time() - self.mark_time,
                                                                       1e-9)
        lr = float(learning_rate(self.config.learning_rate, number, self.steps.steps_per_epoch,
                                 self.steps.total_steps))
        self.write(number, {"loss": loss, "learning_rate": lr, "images_per_second": rate, **extra})
        self.progress.update(number, [("loss", loss), ("lr", lr), ("img/s", rate)])
        if self.plain:
            print(f"step {number}/{self.steps.total_steps}: loss {loss:.4f}, lr {lr:.4g}, "
                  f"{rate:.1f} img/s", flush=True)
        self.mark_step, self.mark_time = done, time.time()


def clear_final_step(model_dir):
    """Removes an earlier run's end marker; this run writes its own."""
    marker = os.path.join(model_dir, FINAL_STEP)
    if os.path.exists(marker):
        os.remove(marker)


def write_final_model(model_dir, model, step):
    """model.keras, then the end marker the sidecar evaluator stops on, each written atomically."""
    with atomic_path(os.path.join(model_dir, FINAL_MODEL)) as tmp:
        model.save(tmp)
    write_json(os.path.join(model_dir, FINAL_STEP), {"step": step})
