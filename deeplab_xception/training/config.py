"""The trainer's typed config: everything about *how* to train, nothing about the data.

Durations are in steps or epochs; a step is one optimizer update (under
asynchronous training, one worker's batch). Epoch-based values turn into steps
with `examples_per_epoch / global_batch`, where global_batch is
`batch_size_per_replica * replicas in sync` (the per-worker batch for the
parameter-server strategy). `steps_per_epoch` and `total_steps` below are the
one place that arithmetic lives.
"""

import dataclasses
import math

from deeplab_xception.errors import UserError

# What a run leaves in model_dir besides its checkpoints, whichever engine trained it.
FINAL_MODEL = "model.keras"
EVAL_RESULTS = "eval_results.json"     # {step: {metric: value}}
# Written atomically by the chief once the last checkpoint is saved: {"step": final step}.
# The evaluator stops on it, so it never redoes the step arithmetic of a strategy it
# does not run (replicas in sync, epochs).
FINAL_STEP = "final_step.json"

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
SCHEDULES = ("exponential", "poly", "constant")
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policy names


@dataclasses.dataclass
class OptimizerConfig:
    momentum: float = 0.9
    nesterov: bool = False


@dataclasses.dataclass
class ScheduleConfig:
    """Learning rate as a function of the step.

    exponential: initial * decay_rate ** (step / steps(decay_epochs)), floored
    when staircase (the Inception / Xception ImageNet recipe).
    poly: (initial - end) * (1 - step / total_steps) ** power + end (DeepLab).
    """
    name: str = "exponential"
    initial: float = 0.05
    decay_rate: float = 0.94
    decay_epochs: float = 2.0
    staircase: bool = True
    power: float = 0.9
    end: float = 0.0

    def validate(self):
        for name in ("initial", "end", "decay_epochs", "power"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.decay_rate <= 0:
            raise UserError(f"decay_rate must be positive, got {self.decay_rate}")


@dataclasses.dataclass
class TrainerConfig:
    model_dir: str = "runs/pretrain"
    train_steps: int = 0                  # total steps; or:
    train_epochs: float = 0.0             # total epochs (needs examples_per_epoch)
    examples_per_epoch: int = 0           # size of the training set
    batch_size_per_replica: int = 32
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    learning_rate: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    weight_decay: float = 4e-5            # slim L2: scale * sum(w^2) / 2 on conv/dense kernels
    checkpoint_every: int = 1000          # steps
    checkpoint_every_seconds: float = 0.0 # also save when this much time passed (0: off)
    keep_checkpoints: int = 5
    summary_every: int = 100              # steps
    strategy: str = "default"
    init_checkpoint: str = ""             # warm start from what load_model opens, layer by layer by name
    synchronized_batch_norm: bool = True  # for the synchronous multi-replica strategies
    dtype_policy: str = "float32"         # or mixed_bfloat16 / mixed_float16 (Keras policy names)
    seed: int = 0

    # Keys of earlier releases: refused with their new name, so an old config fails plainly.
    RENAMED = {"precision": "dtype_policy"}

    def steps_per_epoch(self, replicas_in_sync=1):
        if self.examples_per_epoch <= 0:
            raise UserError("examples_per_epoch must be set to count in epochs")
        return self.examples_per_epoch / (self.batch_size_per_replica * replicas_in_sync)

    def total_steps(self, replicas_in_sync=1):
        if self.train_steps > 0:
            return self.train_steps
        if self.train_epochs > 0:
            return int(math.ceil(self.train_epochs * self.steps_per_epoch(replicas_in_sync)))
        raise UserError("set train_steps or train_epochs to a positive value")

    def validate(self):
        """Checks across fields, when the config loads and again when training starts."""
        if self.strategy not in STRATEGIES:
            raise UserError(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.learning_rate.name not in SCHEDULES:
            raise UserError(
                f"learning_rate.name: {self.learning_rate.name!r} is not one of {', '.join(SCHEDULES)}")
        if self.dtype_policy not in DTYPE_POLICIES:
            raise UserError(f"dtype_policy: {self.dtype_policy!r} is not one of "
                            f"{', '.join(DTYPE_POLICIES)}")
        for name in ("batch_size_per_replica", "checkpoint_every", "summary_every",
                     "keep_checkpoints"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("train_steps", "train_epochs", "examples_per_epoch", "checkpoint_every_seconds"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.learning_rate.name == "exponential" and self.examples_per_epoch <= 0:
            raise UserError("learning_rate.name: exponential decays every decay_epochs epochs; "
                            "set examples_per_epoch (the training set's size)")
        return self
