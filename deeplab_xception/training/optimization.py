"""Learning-rate schedules, the momentum optimizer and slim-style L2 weight decay.

Written in `keras.ops`, so both engines (TensorFlow and JAX) run the same recipe.
"""

import keras
from keras import ops


def learning_rate(schedule, step, steps_per_epoch, total_steps):
    """The learning rate at `step` (a scalar tensor) for a `ScheduleConfig`."""
    step = ops.cast(step, "float32")
    if schedule.name == "constant":
        return ops.convert_to_tensor(schedule.initial, "float32")
    if schedule.name == "exponential":
        progress = step / (schedule.decay_epochs * steps_per_epoch)
        if schedule.staircase:
            progress = ops.floor(progress)
        return schedule.initial * ops.power(schedule.decay_rate, progress)
    fraction = ops.minimum(step, float(total_steps)) / float(total_steps)
    return (schedule.initial - schedule.end) * ops.power(1.0 - fraction, schedule.power) + schedule.end


class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`learning_rate` of the optimizer's own update count: the JAX trainer's schedule, where
    updates are synchronous and `optimizer.iterations` is the step."""

    def __init__(self, schedule, steps_per_epoch, total_steps):
        self.schedule, self.steps_per_epoch, self.total_steps = schedule, steps_per_epoch, total_steps

    def __call__(self, step):
        return learning_rate(self.schedule, step, self.steps_per_epoch, self.total_steps)


def make_optimizer(config, learning_rate_fn):
    """SGD with (Nesterov) momentum; the rate is `learning_rate_fn` (a function of nothing,
    read at each update, or a LearningRateSchedule of the update count).

    The TensorFlow trainer passes a function of its own step variable: Keras's
    `optimizer.iterations` is not updated atomically by concurrent
    asynchronous workers, so it cannot drive the schedule there.
    """
    return keras.optimizers.SGD(learning_rate=learning_rate_fn,
                                momentum=config.optimizer.momentum,
                                nesterov=config.optimizer.nesterov)


def decayed_kernels(model):
    """Kernels slim regularizes: conv, pointwise and dense weights; never depthwise or BN."""
    kernels = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            kernels += decayed_kernels(layer)
        elif isinstance(layer, keras.layers.SeparableConv2D):
            kernels.append(layer.pointwise_kernel)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernels.append(layer.kernel)
    return kernels


def weight_decay(kernels, scale):
    """slim's l2_regularizer summed: scale * sum(w^2) / 2 over `kernels` (their current
    values, the traced ones inside a `keras.StatelessScope`)."""
    if not scale or not kernels:
        return ops.convert_to_tensor(0.0, "float32")
    return scale * ops.sum(ops.stack([ops.sum(ops.square(k.value)) for k in kernels])) / 2.0
