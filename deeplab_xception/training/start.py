"""Where a run's starting weights come from, for both engines.

First match wins:
1. the latest checkpoint in model_dir: a restarted job resumes at its exact
   step, and never opens the warm-start source again (each engine reads its own);
2. the warm start: the task's (fine-tuning's `init`) or trainer.init_checkpoint,
   copied layer by layer by name;
3. build_model's random initialization.
"""

from deeplab_xception.errors import UserError
from deeplab_xception.training.task import WarmStart
from deeplab_xception.weights import load_model
from deeplab_xception.weights.transfer import copy_matching_weights


def warm_start_of(task, model, config):
    """The run's WarmStart: the task's (fine-tuning's `init`), or `init_checkpoint`, or None."""
    warm_start = task.warm_start(model) if hasattr(task, "warm_start") else None
    if warm_start and config.init_checkpoint:
        raise UserError(f"trainer.init_checkpoint: {config.init_checkpoint!r} and the task's "
                        f"starting weights {warm_start.source!r} are both set; keep one")
    if config.init_checkpoint:
        return WarmStart(config.init_checkpoint)
    return warm_start


def apply_warm_start(model, warm_start):
    """Copies `warm_start.source` into `model`; the source lives outside any strategy scope, so
    a parameter-server job never holds a second model's variables on its PS tasks."""
    source = load_model(warm_start.source)
    if warm_start.check:
        warm_start.check(source)
    return copy_matching_weights(model, source, warm_start.source, warm_start.required,
                                 warm_start.skip)
