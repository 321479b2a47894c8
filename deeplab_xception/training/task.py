"""What an application (ImageNet pretraining, segmentation fine-tuning) gives the trainer.

The trainer owns the loop, the strategy, the optimizer, weight decay,
checkpoints and summaries; a task owns only its data, model, loss and metrics.

Batches: every dataset a task returns is batched to the `batch_size` it is
given, which is per replica (`TrainerConfig.batch_size_per_replica`), and
yields `(features, labels)`; `features` is what the model is called on.

Sharding: a task shards its files with
`files.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)`.
Synchronous strategies give each worker its own shard that way. The
parameter-server coordinator runs one dataset function on every worker and
gives it a single pipeline (num_input_pipelines == 1), so a task must also
shuffle its file order with an unseeded shuffle: asynchronous workers then read
the data in independent orders.
"""

import dataclasses
from typing import Callable, Optional, Protocol

import keras


class Task(Protocol):
    """The interface `deeplab_xception.training.train` runs.

    Required: `build_model`, `train_dataset`, `loss`. Optional, used when present:
    - `warm_start(model)`: a `WarmStart` (or None) for a fresh model; opened only
      when no checkpoint exists, never in an evaluator;
    - `eval_dataset(batch_size)`: one ordered pass of (features, labels) batches, and
      `metrics()`: fresh Keras metrics updated as `update_state(labels, outputs)`,
      which the evaluator computes for every checkpoint;
    - `train_batches(batch_size, seed)` and `eval_batches(batch_size)`: the JAX
      trainer's `keras.utils.PyDataset`s (no TensorFlow); item `i` of the first is
      the global batch of step i + 1, a pure function of (seed, i), so a resumed run
      reads on.
    """

    def build_model(self) -> keras.Model:
        """A fresh, untrained Keras 3 model; the trainer calls it inside the strategy scope.

        It must not load weights: where the starting weights come from is the
        trainer's business (resume, then `warm_start` or `init_checkpoint`,
        then this random initialization), and evaluators build it too.
        """

    def train_dataset(self, input_context: "tf.distribute.InputContext",
                      batch_size: int) -> "tf.data.Dataset":
        """An infinite (repeated), shuffled dataset of (features, labels) batches.

        `batch_size` is per replica; batch with `drop_remainder=True` so shapes
        are static. Shard files by `input_context` (see the module docstring).
        """

    def loss(self, labels, outputs):
        """A scalar: the mean loss over *this replica's* batch, without weight decay.

        The task decides what is averaged (examples for classification,
        non-ignored pixels for segmentation). The trainer divides it by the
        number of replicas in sync before taking gradients, so that summed
        gradients equal the gradient of the mean over the global batch, and it
        adds the L2 weight decay itself. Under asynchronous training each
        worker's update uses its own batch mean.
        """


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Starting weights of a run that has no checkpoint yet, copied by layer name."""
    source: str                          # anything `weights.load_model` opens
    required: tuple = ()                 # layers the source must hold, with the same shapes
    skip: tuple = ()                     # layers never copied (a new head's logits)
    check: Optional[Callable] = None     # check(source model): a UserError when it cannot serve
