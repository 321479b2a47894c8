"""The global step: how the trainer, its checkpoints and the evaluator count progress.

It has shape [1] so that asynchronous workers can advance it with an atomic
`scatter_max` to the number of the step they ran: the coordinator may run a
step twice (it retries a closure whose worker died after updating the PS), and
a maximum, unlike an increment, still ends exactly at the last step.
"""

import os
import re

import tensorflow as tf

from deeplab_xception.errors import UserError


def step_variable():
    return tf.Variable([0], dtype=tf.int64, trainable=False, name="step",
                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


def advance(step, number, asynchronous):
    """Marks step `number` done: an atomic maximum on the PS, an increment otherwise."""
    if asynchronous:
        return step.scatter_max(tf.IndexedSlices(tf.reshape(number, [1]), tf.constant([0])))
    return step.assign_add(tf.ones([1], tf.int64))


def value(step):
    return int(step.numpy()[0])


# A checkpoint's files, as tf.train.CheckpointManager names them: ckpt-<step>.index and its shards.
CHECKPOINT_FILE = re.compile(r"ckpt-(\d+)\.(index|data-\d+-of-(\d+))")


def resume_point(model_dir):
    """The prefix of the newest checkpoint in `model_dir`, or None for a fresh start.

    Found by listing its files, not through the `checkpoint` index file, which a crash
    or a hand can leave missing, garbled or naming a deleted checkpoint: a run that
    started at step 0 there would write its checkpoints over the ones on disk. For the
    same reason a newest checkpoint missing some of its files stops the run (UserError).
    """
    found = {}
    for name in tf.io.gfile.listdir(model_dir) if tf.io.gfile.isdir(model_dir) else ():
        match = CHECKPOINT_FILE.fullmatch(name.rstrip("/"))
        if match:
            found.setdefault(int(match.group(1)), []).append(match)
    if not found:
        return None
    number = max(found)
    prefix = os.path.join(model_dir, f"ckpt-{number}")
    shards = [m for m in found[number] if m.group(3)]
    missing = [".index"] if not any(m.group(2) == "index" for m in found[number]) else []
    if not shards or len(shards) != int(shards[0].group(3)):
        missing.append(".data-* shards")
    if missing:
        raise UserError(f"{prefix}: incomplete checkpoint (no {' or '.join(missing)}); move "
                        f"ckpt-{number}.* out of {model_dir} to resume from the one before it")
    return prefix


def restore(checkpoint, prefix):
    """Restores `prefix` into `checkpoint`'s objects: UserError naming it when its files are
    truncated or corrupt, or hold another model's variables."""
    advice = f"move {os.path.basename(prefix)}.* out of {os.path.dirname(prefix)} to resume " \
             "from the checkpoint before it"
    try:
        checkpoint.restore(prefix).assert_existing_objects_matched()
    except (tf.errors.OpError, IndexError) as e:  # IndexError: a truncated .data file
        raise UserError(f"{prefix}: unreadable checkpoint, truncated or corrupt "
                        f"({e.__class__.__name__}); {advice}") from None
    except AssertionError:
        raise UserError(f"{prefix}: holds another model's or optimizer's variables; "
                        "give this run a new trainer.model_dir") from None
