"""Learning-rate schedules, the momentum optimizer and slim-style L2 weight decay."""

import keras
import tensorflow as tf


def learning_rate(schedule, step, steps_per_epoch, total_steps):
    """The learning rate at `step` (a scalar tensor) for a `ScheduleConfig`."""
    step = tf.cast(step, tf.float32)
    if schedule.name == "constant":
        return tf.constant(schedule.initial, tf.float32)
    if schedule.name == "exponential":
        progress = step / (schedule.decay_epochs * steps_per_epoch)
        if schedule.staircase:
            progress = tf.floor(progress)
        return schedule.initial * tf.pow(schedule.decay_rate, progress)
    fraction = tf.minimum(step, float(total_steps)) / float(total_steps)
    return (schedule.initial - schedule.end) * tf.pow(1.0 - fraction, schedule.power) + schedule.end


def make_optimizer(config, learning_rate_fn):
    """SGD with (Nesterov) momentum; the rate is read from `learning_rate_fn()` at each update.

    The trainer passes a function of its own step variable: Keras's
    `optimizer.iterations` is not updated atomically by concurrent
    asynchronous workers, so it cannot drive the schedule.
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
    """slim's l2_regularizer summed: scale * sum(w^2) / 2 over `kernels`."""
    if not scale or not kernels:
        return tf.constant(0.0)
    return scale * tf.add_n([tf.nn.l2_loss(k.value) for k in kernels])
