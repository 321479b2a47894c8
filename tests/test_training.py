"""The training engine: schedules, weight decay, TF_CONFIG roles, the launcher, a synchronous run."""

import glob
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.errors import UserError
from deeplab_xception.training import FINAL_MODEL, ScheduleConfig, TrainerConfig, cluster, launcher, train
from deeplab_xception.training.sidecar import run_sidecar_evaluator
from deeplab_xception.training.optimization import decayed_kernels, learning_rate, weight_decay
from deeplab_xception.weights.transfer import copy_matching_weights

from conftest import REPO
from helpers import randomize_weights


def test_exponential_schedule_is_the_staircase_of_the_xception_recipe():
    schedule = ScheduleConfig(name="exponential", initial=0.05, decay_rate=0.94, decay_epochs=2)
    steps_per_epoch = 10.0
    rates = [float(learning_rate(schedule, s, steps_per_epoch, 100)) for s in (0, 19, 20, 39, 40, 99)]
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.047, 0.047, 0.05 * 0.94 ** 2, 0.05 * 0.94 ** 4],
                               rtol=1e-6)


def test_poly_schedule_falls_with_power_0_9_to_the_end_rate():
    schedule = ScheduleConfig(name="poly", initial=0.007, power=0.9, end=0.0)
    rates = [float(learning_rate(schedule, s, 1.0, 1000)) for s in (0, 500, 1000)]
    np.testing.assert_allclose(rates, [0.007, 0.007 * 0.5 ** 0.9, 0.0], rtol=1e-6, atol=1e-12)


def test_epochs_turn_into_steps_from_dataset_size_and_global_batch():
    config = TrainerConfig(train_epochs=2, examples_per_epoch=1000, batch_size_per_replica=32)
    assert config.steps_per_epoch(replicas_in_sync=2) == 1000 / 64
    assert config.total_steps(replicas_in_sync=2) == 32


def test_weight_decay_is_slim_l2_on_conv_and_pointwise_kernels_only():
    model = build_model("classifier", backbone="xception_tiny", num_classes=5, input_shape=(33, 33, 3))
    kernels = decayed_kernels(model)
    paths = {k.path for k in kernels}
    assert "logits/kernel" in paths and "entry_flow.conv1_1/kernel" in paths
    assert any(p.endswith("separable_conv1_pointwise/kernel") for p in paths)
    assert not any("depthwise" in p or "BatchNorm" in p for p in paths)
    convs = [w for w in model.trainable_weights if w.path.endswith("kernel") and "depthwise" not in w.path]
    assert len(kernels) == len(convs)
    expected = 4e-5 * sum(float(np.sum(np.square(k.numpy()))) for k in kernels) / 2
    np.testing.assert_allclose(float(weight_decay(kernels, 4e-5)), expected, rtol=1e-5)


@pytest.mark.parametrize("value, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "driver", "index": 0}}',
     '"task"."type" \'driver\' is not one of'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "no worker task 3"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "0"}}',
     '"task"."index" must be an integer >= 0, got \'0\''),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}}',
     '"task"."index" must be an integer >= 0, got -1'),
    ('{"cluster": [["a:1"]], "task": {"type": "worker", "index": 0}}',
     '"cluster" must map job names to address lists'),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     '"cluster"."worker" must be a list of "host:port" strings'),
    ('{"cluster": {"worker": ["a:1"]}, "task": ["worker", 0]}', '"task" must be'),
    ('[1, 2]', "expected {"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}}', 'a "cluster" but no "task"'),
])
def test_bad_tf_config_is_a_one_line_user_error(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=re.escape(message)) as error:
        cluster.role()
    assert "\n" not in str(error.value)


def test_roles_come_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster.role() == ("chief", 0) and cluster.is_chief()
    layout = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": layout, "task": {"type": "worker", "index": 1}}))
    assert cluster.role() == ("worker", 1) and not cluster.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": layout, "task": {"type": "worker", "index": 0}}))
    assert cluster.is_chief()


def test_a_chief_whose_tasks_do_not_answer_says_so_within_seconds(monkeypatch, capsys):
    import socket
    import time

    from deeplab_xception.training import strategy

    listening = socket.create_server(("127.0.0.1", 0))
    closed = socket.create_server(("127.0.0.1", 0))
    closed_address = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"chief": ["127.0.0.1:1"], "ps": [closed_address],
                    "worker": [f"127.0.0.1:{listening.getsockname()[1]}"]},
        "task": {"type": "chief", "index": 0}}))
    made = []  # TensorFlow's strategy would wait for the PS without a word
    monkeypatch.setattr(tf.distribute, "ParameterServerStrategy", made.append)
    start = time.monotonic()
    strategy._new_strategy(TrainerConfig(strategy="parameter_server"))
    assert time.monotonic() - start < 10 and len(made) == 1
    assert capsys.readouterr().out == (f"waiting for ps/0 at {closed_address} to answer (not "
                                       "reachable yet; check that they run and TF_CONFIG's "
                                       "addresses)\n")
    listening.close()


def test_local_cluster_sizes_and_layout():
    assert launcher.parse_cluster("workers=2,ps=1") == {"workers": 2, "ps": 1, "evaluator": 0}
    with pytest.raises(UserError, match="'gpus=2'"):
        launcher.parse_cluster("workers=2,gpus=2")
    layout = launcher.cluster_layout(workers=2, ps=1)
    assert [len(layout[job]) for job in ("chief", "worker", "ps")] == [1, 2, 1]
    addresses = sum(layout.values(), [])
    assert len(set(addresses)) == 4 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert set(launcher.cluster_layout(workers=3, ps=0)) == {"worker"}


@pytest.mark.parametrize("overrides, message", [
    (["trainer.train_steps=1000.7"], "trainer.train_steps must be int, got 1000.7"),
    (["data.crop_size=65"], "data.crop_size must be a list of 2 values, got [65]"),
    (["data.eval_crop_size=[65, 65, 3]"], "data.eval_crop_size must be a list of 2 values"),
    (["trainer.batch_size_per_replica=0"], "trainer.batch_size_per_replica must be positive, got 0"),
    (["trainer.train_steps=-5"], "trainer.train_steps must be 0 or more, got -5"),
    (["trainer.learning_rate.name=exponential"],
     "trainer.learning_rate.name: exponential decays every decay_epochs epochs; set examples_per_epoch"),
    (["data.crop_size=[0,0]"], "data.crop_size must be two positive sizes, got [0, 0]"),
    (["data.crop_size=[-5,65]"], "data.crop_size must be two positive sizes, got [-5, 65]"),
    (["data.min_scale=-1"], "data.min_scale must be positive, got -1.0"),
    (["data.min_scale=1.5", "data.max_scale=1.25"], "data.min_scale 1.5 is more than max_scale 1.25"),
    (["model.output_stride=0"], "model.output_stride must be positive, got 0"),
    (["trainer.learning_rate.initial=-0.01"], "trainer.learning_rate.initial must be 0 or more, got -0.01"),
])
def test_config_values_are_checked_when_the_config_loads(overrides, message):
    from deeplab_xception.config import load_config
    from deeplab_xception.segment.config import SegmentConfig

    with pytest.raises(UserError, match=re.escape(message)):
        load_config(SegmentConfig, "segment_tiny.yaml", overrides)
    assert load_config(SegmentConfig, "segment_tiny.yaml",
                       ["trainer.train_steps=1000.0"]).trainer.train_steps == 1000


def test_a_config_whose_top_level_is_not_a_mapping_is_one_line(tmp_path):
    from deeplab_xception.config import load_config
    from deeplab_xception.segment.config import SegmentConfig

    listed = tmp_path / "listed.yaml"
    listed.write_text("- model\n- data\n")
    for overrides in ([], ["trainer.train_steps=2"]):
        with pytest.raises(UserError, match=re.escape(
                f"{listed}: the top level must be a mapping of sections (model:, data:, trainer:, "
                "...), got a list")):
            load_config(SegmentConfig, str(listed), overrides)


def test_unknown_trainer_key_is_rejected():
    from deeplab_xception.config import load_config

    with pytest.raises(UserError, match="unknown config key 'learning_rate.decay'"):
        load_config(TrainerConfig, None, ["learning_rate.decay=0.9"])
    with pytest.raises(UserError, match="^config: config key 'precision' is now 'dtype_policy'$"):
        load_config(TrainerConfig, None, ["precision=mixed_bfloat16"])



def test_the_model_section_refuses_what_the_kind_or_the_data_rule_out():
    from deeplab_xception.training.model import ModelConfig, build_configured

    with pytest.raises(UserError, match="^model.decoder: a classifier model has no decoder"):
        build_configured(ModelConfig(backbone="xception_tiny", decoder=False), "classifier")
    with pytest.raises(UserError, match="^model.num_classes: 4, but the data has 3$"):
        build_configured(ModelConfig(backbone="xception_tiny", num_classes=4), "deeplab",
                         num_classes=3)

MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from deeplab_xception.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_two_replicas_on_twice_the_batch(tmp_path):
    """Two logical CPUs train in lockstep; an epoch is half the steps of one replica's."""
    args = ["pretrain", "--config", "pretrain_tiny.yaml",
            "trainer.strategy=mirrored", f"trainer.model_dir={tmp_path}",
            f"data.train={tmp_path}/data/train-*", f"data.eval={tmp_path}/data/validation-*",
            "trainer.train_steps=6", "trainer.checkpoint_every=3", "trainer.summary_every=3",
            "trainer.batch_size_per_replica=4", "trainer.examples_per_epoch=16", "data.image_size=48"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", MIRRORED, *args], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reader = tf.train.load_checkpoint(str(tmp_path))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")[0] == 6
    assert (tmp_path / "model.keras").is_file()
    # 16 examples, global batch 2 x 4: two steps an epoch, so the rate fell once by step 6
    # (with one replica, an epoch is four steps and it would still be 0.05).
    rates = {}
    for path in glob.glob(f"{tmp_path}/train/events*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            rates.update({event.step: float(tf.make_ndarray(v.tensor))
                          for v in event.summary.value if v.tag == "learning_rate"})
    np.testing.assert_allclose([rates[3], rates[6]], [0.05, 0.05 * 0.94], rtol=1e-6)


class _OneBatchTask:
    """A tiny classifier on one random batch: enough to drive the loop."""

    def __init__(self, size=33, batch=2, classes=5):
        rng = np.random.default_rng(0)
        self.size, self.classes = size, classes
        self.batch = (rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),
                      rng.integers(0, classes, (batch,)).astype("int32"))

    def build_model(self):
        return build_model("classifier", backbone="xception_tiny", num_classes=self.classes,
                           input_shape=(self.size, self.size, 3))

    def train_dataset(self, input_context, batch_size):
        return tf.data.Dataset.from_tensors(self.batch).repeat()

    def loss(self, labels, outputs):
        return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, outputs))


def test_init_checkpoint_warm_starts_the_run_by_layer_name(tmp_path):
    task = _OneBatchTask()
    source = task.build_model()
    randomize_weights(source, seed=3)
    source.save(tmp_path / "source.keras")
    config = TrainerConfig(model_dir=str(tmp_path / "run"), train_steps=1, batch_size_per_replica=2,
                           learning_rate=ScheduleConfig(name="constant", initial=0.0),
                           init_checkpoint=str(tmp_path / "source.keras"))
    train(task, config)
    trained = keras.saving.load_model(tmp_path / "run" / FINAL_MODEL)
    # A zero learning rate leaves the kernels where the warm start put them.
    for name in ("entry_flow.conv1_1", "logits"):
        np.testing.assert_array_equal(trained.get_layer(name).weights[0].numpy(),
                                      source.get_layer(name).weights[0].numpy())

    config.model_dir, config.init_checkpoint = str(tmp_path / "run2"), str(tmp_path / "missing.keras")
    with pytest.raises(UserError, match="missing.keras: no such file"):
        train(task, config)
    assert not (tmp_path / "run2" / FINAL_MODEL).exists()


def test_the_copier_refuses_weights_trained_with_another_depthwise_layout():
    """`paper` and `checkpoint` hold the same layers and shapes; only the ReLUs move."""
    checkpoint_layout = build_model("classifier", backbone="xception_tiny", num_classes=5,
                                    input_shape=(33, 33, 3))
    paper = build_model("classifier", backbone="xception_tiny", num_classes=5,
                        input_shape=(33, 33, 3), depthwise_layout="paper")
    assert [w.shape for w in paper.weights] == [w.shape for w in checkpoint_layout.weights]
    before = [w.numpy() for w in checkpoint_layout.weights]
    with pytest.raises(UserError, match="paper.keras: activations are placed differently .*"
                                        "separable_conv1_depthwise.relu"):
        copy_matching_weights(checkpoint_layout, paper, "paper.keras")
    for value, w in zip(before, checkpoint_layout.weights):
        np.testing.assert_array_equal(value, w.numpy())


@pytest.mark.slow
def test_resumed_runs_and_evaluators_never_open_the_initial_weights(tmp_path):
    """init.weights is read once, at the first start; afterwards the file may be gone."""
    from deeplab_xception.config import load_config
    from deeplab_xception.segment.config import SegmentConfig
    from deeplab_xception.segment.synthetic import write_synthetic_dataset
    from deeplab_xception.segment.task import SegmentationTask

    root = write_synthetic_dataset(str(tmp_path / "shapes"), num_train=8, num_val=2, size=33)
    source = build_model("deeplab", backbone="xception_tiny", num_classes=4, input_shape=(33, 33, 3))
    randomize_weights(source, seed=1)
    source.save(tmp_path / "init.keras")

    def task(steps):
        return SegmentationTask(load_config(SegmentConfig, "segment_tiny.yaml", [
            f"data.root={root}", f"trainer.model_dir={tmp_path / 'run'}", "data.crop_size=[33,33]",
            "data.eval_crop_size=[33,33]", "trainer.batch_size_per_replica=2",
            f"trainer.train_steps={steps}", f"init.weights={tmp_path / 'init.keras'}",
            "trainer.learning_rate.name=constant", "trainer.learning_rate.initial=0.0"]))

    first = task(1)
    assert train(first, first.config.trainer) == 1
    (tmp_path / "init.keras").unlink()
    resumed = task(2)
    assert train(resumed, resumed.config.trainer) == 2
    assert set(run_sidecar_evaluator(resumed, resumed.config.trainer, timeout=1)) == {"2"}
    trained = keras.saving.load_model(tmp_path / "run" / FINAL_MODEL)
    # A zero learning rate: the backbone is still the initial weights after the resume.
    layer = "exit_flow.block2.unit_1.xception_module.separable_conv3_pointwise"
    np.testing.assert_array_equal(trained.get_layer(layer).weights[0].numpy(),
                                  source.get_layer(layer).weights[0].numpy())


def test_ctrl_c_on_the_chief_saves_a_checkpoint_to_resume_from(tmp_path):
    import _thread
    import signal
    import threading
    import time

    config = TrainerConfig(model_dir=str(tmp_path), train_steps=100000, batch_size_per_replica=2,
                           summary_every=1, learning_rate=ScheduleConfig(name="constant"))

    def losses_written():
        try:
            return sum(v.tag == "loss" for path in glob.glob(f"{tmp_path}/train/events*")
                       for event in tf.compat.v1.train.summary_iterator(path)
                       for v in event.summary.value)
        except tf.errors.OpError:  # a record still being written
            return 0

    def interrupt_after_a_few_steps():
        deadline = time.time() + 120
        try:
            while losses_written() < 3 and time.time() < deadline:  # traced, and stepping
                time.sleep(0.2)
        finally:
            _thread.interrupt_main()

    # A runner that starts the tests in the background leaves SIGINT ignored, and then
    # interrupt_main does nothing: Ctrl-C must reach Python as a terminal's would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_after_a_few_steps, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            train(_OneBatchTask(), config)
    finally:
        signal.signal(signal.SIGINT, previous)
    saved = tf.train.load_checkpoint(str(tmp_path)).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")[0]
    assert 0 < saved < 100000
    assert not (tmp_path / FINAL_MODEL).exists()


def _checkpoint_files(model_dir):
    """{name: bytes} of every ckpt-N file in `model_dir`."""
    return {p.name: p.read_bytes() for p in sorted(model_dir.glob("ckpt-*"))}


class _PixelTask(_OneBatchTask):
    """A one-layer classifier of 4x4 images: the loop's bookkeeping in a second a run."""

    def __init__(self):
        super().__init__(size=4)

    def build_model(self):
        inputs = keras.Input((self.size, self.size, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(self.classes, activation="softmax")(pooled))


def test_a_resume_never_restarts_over_its_checkpoints(tmp_path, capsys):
    """A missing or garbled `checkpoint` index file: the run continues from the newest
    ckpt-N on disk; a checkpoint missing files, truncated or corrupt stops it in one line,
    every file left as it was (final_step.json included)."""
    def config(steps):
        return TrainerConfig(model_dir=str(tmp_path), train_steps=steps, batch_size_per_replica=2,
                             checkpoint_every=1, learning_rate=ScheduleConfig(name="constant"))

    assert train(_PixelTask(), config(2)) == 2
    written = _checkpoint_files(tmp_path)
    assert {"ckpt-1.index", "ckpt-2.index"} <= set(written)
    (tmp_path / "checkpoint").write_text("model_checkpoint_path: {{{ garbled")
    capsys.readouterr()
    assert train(_PixelTask(), config(3)) == 3
    assert f"resuming from {tmp_path / 'ckpt-2'} at step 2" in capsys.readouterr().out
    (tmp_path / "checkpoint").unlink()
    assert train(_PixelTask(), config(4)) == 4
    assert f"resuming from {tmp_path / 'ckpt-3'} at step 3" in capsys.readouterr().out
    kept = _checkpoint_files(tmp_path)
    assert {name: kept[name] for name in written} == written  # ckpt-1 and ckpt-2 untouched

    data = tmp_path / "ckpt-4.data-00000-of-00001"
    index = tmp_path / "ckpt-4.index"
    damages = [
        (lambda: index.unlink(), "ckpt-4: incomplete checkpoint (no .index); move ckpt-4.* out of"),
        (lambda: data.write_bytes(data.read_bytes()[:40]), "ckpt-4: unreadable checkpoint, "
                                                           "truncated or corrupt (IndexError)"),
        (lambda: index.write_bytes(index.read_bytes()[:-9] + b"\0" * 9),
         "ckpt-4: unreadable checkpoint, truncated or corrupt"),
    ]
    for damage, message in damages:
        kept = _checkpoint_files(tmp_path)
        damage()
        damaged = _checkpoint_files(tmp_path)
        marker = (tmp_path / "final_step.json").read_bytes()
        with pytest.raises(UserError) as error:
            train(_PixelTask(), config(6))
        assert str(error.value).startswith(f"{tmp_path / message}"), error.value
        assert "\n" not in str(error.value)
        assert _checkpoint_files(tmp_path) == damaged
        assert (tmp_path / "final_step.json").read_bytes() == marker
        for name, content in kept.items():  # undo the damage for the next case
            (tmp_path / name).write_bytes(content)


def test_training_progress_in_a_log_is_plain_lines(tmp_path, capsys):
    """stdout is no terminal here, as in a redirected log: a line per summary, no ANSI codes."""
    config = TrainerConfig(model_dir=str(tmp_path), train_steps=2, batch_size_per_replica=2,
                           summary_every=1, learning_rate=ScheduleConfig(name="constant"))
    train(_PixelTask(), config)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    steps = [line.split(":")[0] for line in out.splitlines() if line.startswith("step ")]
    assert steps == ["step 1/2", "step 2/2"]
