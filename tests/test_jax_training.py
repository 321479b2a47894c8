"""Fine-tuning on the JAX backend: the numpy input agrees with tf.data, a step equals the
TensorFlow trainer's, a run learns the shapes and resumes at its step, without TensorFlow."""

import glob
import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.weights import load_model
from deeplab_xception.segment import augment, augment_numpy
from deeplab_xception.segment.batches import EvalBatches, TrainBatches
from deeplab_xception.segment.datasets import load_dataset
from deeplab_xception.segment.evaluate import evaluate
from deeplab_xception.segment.synthetic import CLASSES, write_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "tests", "fixed_batch_training.py")


def _run(backend, args, tmp_path, devices=1, timeout=300):
    """A Python subprocess on `backend`; its stdout, after checking it succeeded."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO,
               DEEPLAB_XCEPTION_CACHE=str(tmp_path / "cache"))
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


# -- input ----------------------------------------------------------------------

@pytest.mark.parametrize("scale", [None, 0.5, 0.75, 1.0, 1.25, 1.75, 2.0, 0.37])
def test_numpy_augmentation_equals_the_tf_data_one(scale):
    """With the scale, crop offset and flip forced, numpy and tf.data give the same crop."""
    rng = np.random.default_rng(int((scale or 0) * 100))
    for _ in range(4):
        height, width = (int(v) for v in rng.integers(5, 70, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        label = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), (height, width))
        crop = tuple(int(v) for v in rng.integers(4, 60, 2))
        ours, our_label = augment_numpy.scale_and_pad(image, label, crop, scale)
        theirs, their_label = augment.scale_and_pad(tf.cast(image, tf.float32), label[..., None],
                                                    crop, scale)
        assert ours.shape == tuple(theirs.shape) and our_label.shape == tuple(their_label.shape[:2])
        for flip in (False, True):
            offset = (int(rng.integers(ours.shape[0] - crop[0] + 1)),
                      int(rng.integers(ours.shape[1] - crop[1] + 1)))
            a, a_label = augment_numpy.crop_and_flip(ours, our_label, crop, offset, flip)
            b, b_label = augment.crop_and_flip(theirs, their_label, crop, tf.constant(offset),
                                               tf.constant(flip))
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-3)
            np.testing.assert_array_equal(a_label, b_label.numpy())
            assert a.dtype == np.float32 and a_label.dtype == np.int32


def test_batches_follow_the_contract(tmp_path):
    """Padding with the mean pixel (0 after preprocessing) and 255, every choice reachable,
    batch i a function of (seed, i), and eval batches padded as tf.data's eval_pad."""
    root = write_synthetic_dataset(str(tmp_path / "shapes"), num_train=6, num_val=3, size=21)
    train = load_dataset("generic", root, "train")
    batches = TrainBatches(train, 4, (29, 17), 0.5, 1.5, 0.25, True, seed=3, workers=1)
    first = batches[5]
    np.testing.assert_array_equal(first[0], batches[5][0])
    assert not np.array_equal(first[0], batches[6][0])
    images = np.concatenate([batches[i][0] for i in range(12)])
    labels = np.concatenate([batches[i][1] for i in range(12)])
    assert images.shape == (48, 29, 17, 3) and labels.shape == (48, 29, 17)
    padded = labels == 255
    assert padded.any() and (images[padded] == 0).all()  # 127.5 preprocessed
    assert sorted(np.unique(np.concatenate(
        [batches.example_indices(i) for i in range(3)]))) == list(range(6))  # one epoch

    val = load_dataset("generic", root, "val")
    eval_batches = EvalBatches(val, 2, (25, 23))
    assert len(eval_batches) == 2
    features, labels = eval_batches[1]
    image, label = val.read(2)
    expected = augment.eval_pad(image, label[..., None], (25, 23))
    np.testing.assert_allclose(features[0], expected[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels[0], expected[1].numpy())
    assert (labels[1] == 255).all() and (features[1] == 0).all()  # filler: every label ignored


# -- one step -------------------------------------------------------------------

def _losses(model_dir):
    """{step: loss} from the trainer's TensorBoard events (tf.summary's or ours)."""
    losses = {}
    for path in glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    losses[event.step] = (float(tf.make_ndarray(value.tensor))
                                          if value.HasField("tensor") else value.simple_value)
    return losses


@pytest.fixture(scope="module")
def step_setup(tmp_path_factory):
    """A dataset folder, a starting model, and a batch with ignored pixels (as many in each
    half of the batch, so that per-device means average to the whole batch's mean)."""
    base = tmp_path_factory.mktemp("step")
    root = write_synthetic_dataset(str(base / "shapes"), num_train=2, num_val=2, size=33)
    start = build_model("deeplab", backbone="xception_tiny", num_classes=len(CLASSES),
                        batch_norm_momentum=0.9, dropout=0.0)
    start.save(str(base / "start.keras"))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 33, 33, 3)).astype(np.float32)
    labels = rng.integers(0, len(CLASSES), (4, 33, 33)).astype(np.int32)
    labels[:, :, :6] = 255
    np.savez(base / "batch.npz", images=images, labels=labels)
    overrides = [f"trainer.init_checkpoint={base / 'start.keras'}", "model.dropout=0",
                 "trainer.train_steps=1", "trainer.summary_every=1", "trainer.weight_decay=0.01",
                 "trainer.optimizer.nesterov=true", "data.crop_size=[33,33]",
                 "data.eval_crop_size=[33,33]"]
    return base, root, overrides


def _fixed_batch_run(backend, setup, name, *extra, devices=1):
    base, root, overrides = setup
    model_dir = base / name
    out = _run(backend, [SCRIPT, str(base / "batch.npz"), root, str(model_dir), *overrides,
                         *extra], base, devices=devices)
    return load_model(str(model_dir / "model.keras")), _losses(str(model_dir)), out


@pytest.fixture(scope="module")
def tensorflow_steps(step_setup):
    return _fixed_batch_run("tensorflow", step_setup, "tf", "trainer.batch_size_per_replica=4")


GRADIENTS_ON_JAX = """
import sys, numpy as np, keras
from keras.src.backend.common import dtypes
from deeplab_xception.models.depthwise import with_shifted_depthwise
keras.config.set_floatx("float64")
# Keras' JAX type promotion maps float64 to float32 even under x64, so BatchNormalization
# (which promotes its input with "float32") would normalize in float32.
dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
model = keras.models.load_model(sys.argv[1])
network = with_shifted_depthwise(model)  # what the JAX trainer differentiates
batch = np.load(sys.argv[2])
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255,
                                                 dtype="float64")
non_trainable = [v.value for v in model.non_trainable_variables]
def objective(trainable):
    logits, _ = network.stateless_call(trainable, non_trainable, batch["images"], training=True)
    return loss(batch["labels"], logits)
import jax
grads = jax.jit(jax.grad(objective))([v.value for v in model.trainable_variables])
np.savez(sys.argv[3], *[np.asarray(g) for g in grads])
"""


def test_jax_gradients_in_float64_equal_tensorflows(tmp_path):
    """In float64 the JAX trainer's network (shifted depthwise convs, batch norm on batch
    statistics, ignored pixels) has TensorFlow's gradient. In float32 both backends are
    0.3-3% per variable from it on this batch (batch-norm gradients sum cancelling terms),
    which is what the float32 step comparison below allows for."""
    keras.utils.set_random_seed(0)
    keras.config.set_floatx("float64")
    try:
        model = build_model("deeplab", backbone="xception_tiny", num_classes=4, dtype="float64",
                            batch_norm_momentum=0.9, dropout=0.0)
    finally:
        keras.config.set_floatx("float32")
    model.save(str(tmp_path / "model.keras"))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 33, 33, 3))
    labels = rng.integers(0, 4, (4, 33, 33)).astype(np.int32)
    labels[:, :, :6] = 255
    np.savez(tmp_path / "batch.npz", images=images, labels=labels)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255,
                                                     dtype="float64")
    with tf.GradientTape() as tape:
        value = loss(labels, model(images, training=True))
    reference = tape.gradient(value, model.trainable_variables)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_ENABLE_X64="1", PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", GRADIENTS_ON_JAX, str(tmp_path / "model.keras"),
                    str(tmp_path / "batch.npz"), str(tmp_path / "grads.npz")],
                   env=env, check=True, timeout=300, cwd=str(tmp_path))
    grads = np.load(tmp_path / "grads.npz")
    differences = []
    for i, (variable, expected) in enumerate(zip(model.trainable_variables, reference)):
        expected = expected.numpy()
        if np.linalg.norm(expected) > 1e-6:  # betas before a batch norm: zero up to rounding
            differences.append(np.linalg.norm(grads[f"arr_{i}"] - expected)
                               / np.linalg.norm(expected))
    assert len(differences) > len(model.trainable_variables) // 2
    # The logits layer stays float32 in every policy: 3e-8 is its rounding.
    assert max(differences) < 1e-6, sorted(differences)[-3:]


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 2])
def test_jax_steps_equal_the_tensorflow_trainers(step_setup, tensorflow_steps, devices):
    """A step (Nesterov momentum, weight decay, ignored pixels, batch norm) of the JAX
    trainer, on one device or two in data parallel, lands on the TensorFlow trainer's loss
    and weights."""
    reference, reference_losses, _ = tensorflow_steps
    model, losses, out = _fixed_batch_run(
        "jax", step_setup, f"jax{devices}", f"trainer.batch_size_per_replica={4 // devices}",
        *(["trainer.strategy=mirrored"] if devices > 1 else []), devices=devices)
    assert "tensorflow imported: False" in out
    assert sorted(losses) == sorted(reference_losses) == [1]
    assert losses[1] == pytest.approx(reference_losses[1], rel=1e-4)
    # Updates: the same direction and size (a wrong rate, momentum or decay would move these
    # by percents). They differ by 0.4-0.9% per variable (median; most on batch-norm gammas
    # and betas): float32 rounding, which each backend's gradient shows against the float64
    # one (0.3-3%); in float64 the two agree to 3e-8 (the test above).
    start = load_model(str(step_setup[0] / "start.keras"))
    differences = []
    for ours, theirs, before in zip(model.weights, reference.weights, start.weights):
        assert ours.path == theirs.path
        reference_update = (theirs.numpy() - before.numpy()).ravel()
        update = (ours.numpy() - before.numpy()).ravel()
        if np.linalg.norm(reference_update) > 1e-6:
            differences.append(np.linalg.norm(update - reference_update)
                               / np.linalg.norm(reference_update))
            assert np.dot(update, reference_update) / np.dot(reference_update, reference_update) \
                == pytest.approx(1.0, abs=0.02), ours.path
    assert len(differences) > len(model.weights) // 2  # the steps changed most variables
    assert np.median(differences) < 0.02 and max(differences) < 0.1, sorted(differences)[-5:]


# -- a whole run ----------------------------------------------------------------

def _finetune_jax(tmp_path, root, model_dir, steps):
    code = ("import sys; from deeplab_xception.cli import main; "
            f"rc = main(['finetune', '--config', 'segment_tiny.yaml', 'data.root={root}', "
            f"'trainer.model_dir={model_dir}', 'trainer.train_steps={steps}', "
            "'trainer.checkpoint_every=1000', 'data.workers=1']); "
            "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(rc)")
    return _run("jax", ["-c", code], tmp_path)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.slow
def test_jax_finetuning_learns_the_shapes_and_resumes_at_its_step(tmp_path):
    root = write_synthetic_dataset(str(tmp_path / "shapes"), num_train=48, num_val=16, size=65)
    model_dir = tmp_path / "run"
    first = _finetune_jax(tmp_path, root, model_dir, 40)
    assert "resuming" not in first and "tensorflow imported: False" in first
    checkpoint = model_dir / "ckpt-40.weights.h5"
    digest = _digest(checkpoint)

    second = _finetune_jax(tmp_path, root, model_dir, 80)
    assert f"resuming from {checkpoint} at step 40" in second
    assert "trained to step 80" in second and "tensorflow imported: False" in second
    assert sorted(os.listdir(model_dir)) == [
        "ckpt-40.weights.h5", "ckpt-80.weights.h5", "eval", "eval_results.json",
        "final_step.json", "model.classes.txt", "model.keras", "train"]
    assert _digest(checkpoint) == digest  # never overwritten
    assert sorted(_losses(str(model_dir))) == list(range(10, 81, 10))
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert sorted(results, key=int) == ["40", "80"]

    # Scored by the TensorFlow evaluation, on the model the JAX run saved.
    report, _ = evaluate(load_model(str(model_dir / "model.keras")),
                         load_dataset("generic", root, "val"))
    assert min(report["per_class_iou"].values()) > 0.5, report
    assert results["80"]["mean_iou"] == pytest.approx(report["mean_iou"], abs=0.02)


def test_jax_refuses_what_only_tensorflow_runs(tmp_path, capsys):
    root = write_synthetic_dataset(str(tmp_path / "shapes"), num_train=2, num_val=2, size=17)
    for override, message in (
            ("trainer.strategy=parameter_server", "strategy: parameter_server runs on TensorFlow only"),
            ("trainer.dtype_policy=mixed_float16", "mixed_float16 (loss scaling) trains on TensorFlow only"),
            ("data.tfrecords=x-*.tfrecord", "TFRecords need TensorFlow")):
        code = ("import sys; from deeplab_xception.cli import main; "
                f"sys.exit(main(['finetune', '--config', 'segment_tiny.yaml', 'data.root={root}', "
                f"'trainer.model_dir={tmp_path / 'run'}', '{override}']))")
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run" / "model.keras").exists()
