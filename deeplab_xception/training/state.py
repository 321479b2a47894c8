"""The global step: how the trainer, its checkpoints and the evaluator count progress.

It has shape [1] so that asynchronous workers can advance it with an atomic
`scatter_max` to the number of the step they ran: the coordinator may run a
step twice (it retries a closure whose worker died after updating the PS), and
a maximum, unlike an increment, still ends exactly at the last step.
"""

import tensorflow as tf


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
