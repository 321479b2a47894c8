"""Numerics checked against references written outside the package: tf.nn ops, numpy, a hand
computation, the papers' recipes and the official batch-norm settings."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.config import load_config
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.training import FINAL_MODEL, OptimizerConfig, ScheduleConfig, TrainerConfig, train
from deeplab_xception.training.optimization import learning_rate
from helpers import config_path, randomize_weights
from deeplab_xception.pretrain.config import PretrainConfig

# The official values (tensorflow/models research/deeplab): xception_arg_scope and the head's scope.
BACKBONE_BN_EPSILON, HEAD_BN_EPSILON, BN_DECAY = 1e-3, 1e-5, 0.9997


# -- one Xception module against tf.nn ------------------------------------------------------

def _reference_module(x, layer, prefix, stride, rate, skip):
    """DeepLab's xception_module written with tf.nn: three times [ReLU, depthwise 3x3, BN,
    pointwise, BN], the stride on the last depthwise conv (explicit pad + VALID when strided,
    SAME otherwise), plus the shortcut; no ReLU after the add."""
    def batch_norm(t, name):
        bn = layer(name)
        return tf.nn.batch_normalization(t, bn.moving_mean, bn.moving_variance, bn.beta, bn.gamma,
                                         BACKBONE_BN_EPSILON)

    residual = x
    for i in range(3):
        name = f"{prefix}.separable_conv{i + 1}"
        residual = tf.nn.relu(residual)
        step = stride if i == 2 else 1
        padding = "SAME"
        if step > 1:
            total = 3 + 2 * (rate - 1) - 1
            begin = total // 2
            residual = tf.pad(residual, [[0, 0], [begin, total - begin], [begin, total - begin], [0, 0]])
            padding = "VALID"
        residual = tf.nn.depthwise_conv2d(residual, layer(name + "_depthwise").kernel,
                                          [1, step, step, 1], padding, dilations=[rate, rate])
        residual = batch_norm(residual, name + "_depthwise.BatchNorm")
        residual = tf.nn.conv2d(residual, layer(name + "_pointwise").kernel, 1, "VALID")
        residual = batch_norm(residual, name + "_pointwise.BatchNorm")
    if skip == "conv":
        shortcut = tf.nn.conv2d(x, layer(prefix + ".shortcut").kernel, stride, "SAME")
        return residual + batch_norm(shortcut, prefix + ".shortcut.BatchNorm")
    return residual + x


MODULE = "{}.unit_{}.xception_module"


@pytest.mark.parametrize("output_stride,unit,following,stride,rate,skip", [
    (16, ("entry_flow.block2", 1), ("entry_flow.block3", 1), 2, 1, "conv"),
    (16, ("middle_flow.block1", 1), ("middle_flow.block1", 2), 1, 1, "sum"),
    (8, ("middle_flow.block1", 1), ("middle_flow.block1", 2), 1, 2, "sum"),
])
def test_xception_module_matches_tf_nn(output_stride, unit, following, stride, rate, skip):
    """On a 64x64 image the strided module sees an even 16x16 input, where fixed padding and
    SAME differ; small moving variances make the batch-norm epsilon count."""
    backbone = build_model("backbone", backbone="xception_tiny", output_stride=output_stride)
    randomize_weights(backbone, seed=5)
    rng = np.random.default_rng(6)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(1e-4, 1e-3, layer.moving_variance.shape))
            layer.gamma.assign(rng.uniform(0.01, 0.03, layer.gamma.shape))
    prefix = MODULE.format(*unit)
    module_in = backbone.get_layer(prefix + ".separable_conv1.relu_in").input
    module_out = backbone.get_layer(MODULE.format(*following) + ".separable_conv1.relu_in").input
    images = rng.uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    x, expected_in = keras.Model(backbone.input, [module_in, module_out])(images)
    want = _reference_module(x, backbone.get_layer, prefix, stride, rate, skip)
    if stride == 2:
        assert tuple(x.shape[1:3]) == (16, 16)
    assert want.shape == expected_in.shape
    np.testing.assert_allclose(expected_in, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


# -- batch-norm settings ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["deeplab", "classifier"])
def test_batch_norms_use_the_official_epsilon_and_decay(kind):
    model = build_model(kind, backbone="xception_tiny", num_classes=3)
    backbone = {layer.name for layer in model.backbone.layers}
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert {(l.epsilon, l.momentum) for l in norms if l.name in backbone} == {(BACKBONE_BN_EPSILON, BN_DECAY)}
    head = {(l.epsilon, l.momentum) for l in norms if l.name not in backbone}
    assert head == ({(HEAD_BN_EPSILON, BN_DECAY)} if kind == "deeplab" else set())
    short = build_model(kind, backbone="xception_tiny", num_classes=3, batch_norm_momentum=0.9)
    assert {l.momentum for l in short.layers if isinstance(l, keras.layers.BatchNormalization)} == {0.9}


# -- multi-scale + flip prediction against numpy ----------------------------------------------

def _scale_dimension(d, s):
    return int((d - 1) * s + 1)


def _resize(array, height, width):
    """Bilinear resize with align_corners=True of N x h x w x C, in numpy."""
    def axis(out, size):
        position = np.arange(out) * ((size - 1) / max(out - 1, 1))
        low = np.minimum(np.floor(position).astype(int), size - 1)
        return low, np.minimum(low + 1, size - 1), position - low

    y0, y1, fy = axis(height, array.shape[1])
    x0, x1, fx = axis(width, array.shape[2])
    rows = array[:, y0] * (1 - fy)[None, :, None, None] + array[:, y1] * fy[None, :, None, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :, None] + rows[:, :, x1] * fx[None, None, :, None]


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _official_multiscale(logits_of, images, scales, flip):
    """The official predict_labels_multi_scale: per scale, resize the image, take the stride-4
    logits (of the flipped image too, flipped back), resize them to
    scale_dimension(H, max(1, s) / 4), then to H x W, softmax; the mean over all passes."""
    x = images.astype(np.float64) * (2 / 255) - 1
    height, width = images.shape[1:3]
    probabilities = []
    for s in scales:
        scaled = _resize(x, _scale_dimension(height, s), _scale_dimension(width, s))
        for flipped in ([False, True] if flip else [False]):
            logits = logits_of(scaled[:, :, ::-1] if flipped else scaled)
            logits = logits[:, :, ::-1] if flipped else logits
            logits = _resize(logits, _scale_dimension(height, max(1.0, s) / 4),
                             _scale_dimension(width, max(1.0, s) / 4))
            probabilities.append(_softmax(_resize(logits, height, width)))
    return np.mean(probabilities, axis=0)


def test_multiscale_flip_prediction_matches_the_official_procedure():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    randomize_weights(model, seed=3, scale=0.3)
    stride4 = keras.Model(model.input, model.get_layer(model.LOGITS).output)

    def logits_of(images):
        return keras.ops.convert_to_numpy(stride4(images.astype("float32"), training=False))

    images = np.random.default_rng(0).integers(0, 256, (1, 41, 53, 3)).astype("uint8")
    scales = (0.5, 1.75)  # below and above 1: the intermediate size differs in both
    want = _official_multiscale(logits_of, images, scales, flip=True)
    got = Segmenter(model, scales=scales, flip=True).probabilities(images)
    assert got.shape == want.shape == (1, 41, 53, 4)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The probabilities are far from uniform, so the check sees every resize.
    assert np.abs(want - 0.25).max() > 0.05


# -- one trainer step by hand ---------------------------------------------------------------

class _LinearTask:
    """Dense(2) on 3 features, a fixed batch, squared error: gradients by hand."""

    KERNEL = np.array([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]])
    BIAS = np.array([0.1, -0.2])
    FEATURES = np.array([[1.0, 2.0, -1.0], [0.5, -1.5, 2.0]])
    TARGETS = np.array([[1.0, 0.0], [-1.0, 2.0]])

    def build_model(self):
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
        model.get_layer("dense").set_weights([self.KERNEL, self.BIAS])
        return model

    def train_dataset(self, input_context, batch_size):
        batch = (self.FEATURES.astype("float32"), self.TARGETS.astype("float32"))
        return tf.data.Dataset.from_tensors(batch).repeat()

    def loss(self, labels, outputs):
        return tf.reduce_mean(tf.reduce_sum(tf.square(outputs - labels), axis=-1))

    def gradients(self, kernel, bias):
        residual = self.FEATURES @ kernel + bias - self.TARGETS
        return 2 * self.FEATURES.T @ residual / len(residual), 2 * residual.mean(0)


def test_two_trainer_steps_match_a_hand_computed_nesterov_update(tmp_path):
    """SGD with Nesterov momentum (Keras's form: v = m v - lr g; w += m v - lr g), the staircase
    schedule at steps 0 and 1 (one step per epoch, rate halved each epoch) and slim's L2 decay,
    scale * w on the kernel only."""
    task, momentum, decay = _LinearTask(), 0.9, 0.05
    schedule = ScheduleConfig(name="exponential", initial=0.1, decay_rate=0.5, decay_epochs=1)
    config = TrainerConfig(model_dir=str(tmp_path), train_steps=2, batch_size_per_replica=2,
                           examples_per_epoch=2, weight_decay=decay, summary_every=1,
                           optimizer=OptimizerConfig(momentum=momentum, nesterov=True),
                           learning_rate=schedule)
    train(task, config)
    kernel, bias = task.KERNEL.copy(), task.BIAS.copy()
    velocity = [np.zeros_like(kernel), np.zeros_like(bias)]
    for step, rate in enumerate((0.1, 0.05)):
        assert float(learning_rate(schedule, step, 1.0, 2)) == pytest.approx(rate)
        kernel_grad, bias_grad = task.gradients(kernel, bias)
        for i, (w, g) in enumerate(((kernel, kernel_grad + decay * kernel), (bias, bias_grad))):
            velocity[i] = momentum * velocity[i] - rate * g
            w += momentum * velocity[i] - rate * g
    trained = keras.saving.load_model(tmp_path / FINAL_MODEL).get_layer("dense")
    np.testing.assert_allclose(trained.kernel.numpy(), kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trained.bias.numpy(), bias, rtol=1e-5, atol=1e-6)


# -- the ImageNet pretraining config against the paper ---------------------------------------

def test_pretraining_config_is_the_papers_recipe():
    """DeepLabv3+ section 4.3: Nesterov momentum 0.9, rate 0.05 decayed by 0.94 every 2 epochs,
    weight decay 4e-5, batch 32 per worker, 299x299 images."""
    config = load_config(PretrainConfig, config_path("pretrain_imagenet"))
    trainer = config.trainer.validate()
    assert (trainer.optimizer.momentum, trainer.optimizer.nesterov) == (0.9, True)
    schedule = trainer.learning_rate
    assert (schedule.name, schedule.initial, schedule.decay_rate, schedule.decay_epochs) == (
        "exponential", 0.05, 0.94, 2)
    assert trainer.weight_decay == 4e-5 and trainer.batch_size_per_replica == 32
    assert config.data.image_size == 299 and config.model.num_classes == 1001
    steps_per_epoch = trainer.steps_per_epoch()
    assert trainer.examples_per_epoch == 1_281_167  # ImageNet-1k train
    rates = [float(learning_rate(schedule, e * steps_per_epoch, steps_per_epoch, trainer.total_steps()))
             for e in (0, 1.99, 2, 4)]
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.05 * 0.94, 0.05 * 0.94 ** 2], rtol=1e-6)
