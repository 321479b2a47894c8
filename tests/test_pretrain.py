"""ImageNet pretraining end to end on the synthetic set: learning, clusters, failures, bad input."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.config import load_config
from deeplab_xception.errors import UserError
from deeplab_xception.training import FINAL_MODEL, train
from deeplab_xception.weights.transfer import load_matching_weights
from deeplab_xception.training.sidecar import run_sidecar_evaluator
from deeplab_xception.training.launcher import LocalCluster, cluster_layout
from deeplab_xception.pretrain import data, synthetic
from deeplab_xception.pretrain.config import PretrainConfig
from deeplab_xception.pretrain.task import ClassificationTask

from conftest import REPO

TINY = "pretrain_tiny.yaml"  # shipped with the package, found by name


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return synthetic.write_tfrecords(tmp_path_factory.mktemp("shapes"), train_images=128,
                                     eval_images=48, image_size=48)


def overrides(shapes, model_dir, *extra):
    return [f"trainer.model_dir={model_dir}", f"data.train={shapes['train']}",
            f"data.eval={shapes['eval']}", "data.synthetic=false", "data.image_size=48",
            f"trainer.examples_per_epoch={shapes['train_images']}", *extra]


def final_step(model_dir):
    return tf.train.load_checkpoint(str(model_dir)).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")[0]


@pytest.mark.slow
def test_single_process_learns_the_shapes_and_hands_off_the_backbone(shapes, tmp_path):
    config = load_config(PretrainConfig, TINY, overrides(shapes, tmp_path, "trainer.summary_every=5",
                                                         "trainer.train_steps=90"))
    task = ClassificationTask(config)
    assert train(task, config.trainer) == 90
    events = [e for f in glob.glob(f"{tmp_path}/train/events*") for e in tf.compat.v1.train.summary_iterator(f)]
    losses = [float(tf.make_ndarray(v.tensor)) for e in events for v in e.summary.value if v.tag == "loss"]
    # Cross-entropy at chance over five logits is log(5); single batches are noisy (one batch of
    # the last few can spike past chance), so the median of the last four is what must fall.
    assert len(losses) == 18 and np.median(losses[-4:]) < 0.7 * np.log(5) < losses[0], losses
    results = run_sidecar_evaluator(task, config.trainer, timeout=1)
    # Four classes: chance is 0.25. The file order is shuffled unseeded (asynchronous workers
    # must read independently), so runs differ: at 60 steps top-1 ranged 0.67-1.0, at 90
    # steps 0.94-1.0 over six seeds.
    assert results["90"]["top1"] >= 0.7, results

    deeplab = build_model("deeplab", backbone="xception_tiny", num_classes=3, input_shape=(48, 48, 3))
    copied = load_matching_weights(deeplab, tmp_path / FINAL_MODEL)
    classifier = keras.saving.load_model(tmp_path / FINAL_MODEL)
    assert len(copied) == sum(1 for layer in classifier.layers if layer.weights) - 1  # all but logits
    layer = "exit_flow.block2.unit_1.xception_module.separable_conv3_pointwise"
    np.testing.assert_array_equal(deeplab.get_layer(layer).get_weights()[0],
                                  classifier.get_layer(layer).get_weights()[0])


def cluster_command(shapes, model_dir, steps):
    return [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()",
            "pretrain", "--config", str(TINY), "trainer.strategy=parameter_server",
            *overrides(shapes, model_dir, f"trainer.train_steps={steps}", "trainer.checkpoint_every=10")]


def wait_for_checkpoint(model_dir, job, newer_than=None, timeout=240):
    deadline = time.time() + timeout
    while tf.train.latest_checkpoint(str(model_dir)) in (None, newer_than):
        assert job.processes["chief", 0].poll() is None, "the chief ended early"
        assert time.time() < deadline, f"no checkpoint after {timeout} s"
        time.sleep(0.2)
    return tf.train.latest_checkpoint(str(model_dir))


@pytest.mark.slow
def test_parameter_server_run_survives_a_dead_worker_and_a_restarted_chief(shapes, tmp_path):
    """1 chief, 2 workers, 1 PS and the sidecar evaluator: worker 1 is killed after the
    first checkpoint and the run goes on to the next without it; then the chief is killed
    and restarted (worker 1 with it): it resumes from the last checkpoint and the run ends
    at exactly the step asked for, evaluated."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    log = open(tmp_path / "chief.log", "w")
    with LocalCluster(cluster_command(shapes, tmp_path, 40), cluster_layout(2, 1), evaluators=1,
                      env=env) as job:
        first = wait_for_checkpoint(tmp_path, job)
        job.processes["worker", 1].send_signal(signal.SIGKILL)
        wait_for_checkpoint(tmp_path, job, newer_than=first)
        job.processes["chief", 0].kill()
        job.processes["chief", 0].wait()
        saved = final_step(tmp_path)
        assert saved < 40
        job.start(("worker", 1))  # back, as its pod would be, for the new coordinator
        job.start(("chief", 0), stdout=log, stderr=log)
        assert job.wait(timeout=300) == 0
    assert f"at step {saved}" in (tmp_path / "chief.log").read_text()
    assert final_step(tmp_path) == 40
    assert (tmp_path / FINAL_MODEL).is_file()
    results = json.loads((tmp_path / "eval_results.json").read_text())
    classifier = keras.saving.load_model(tmp_path / FINAL_MODEL)
    config = load_config(PretrainConfig, TINY, overrides(shapes, tmp_path))
    images, labels = zip(*data.eval_dataset(config.data, batch_size=16))
    predicted = np.argmax(classifier.predict(np.concatenate(images), verbose=0), axis=-1)
    np.testing.assert_allclose(results["40"]["top1"], np.mean(predicted == np.concatenate(labels)))


def start_cli(args, env):
    """The CLI as a subprocess; returns it and a list that fills with its output lines."""
    process = subprocess.Popen([sys.executable, "-c", "from deeplab_xception.cli import entry_point; "
                                "entry_point()", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


@pytest.mark.slow
def test_a_lost_parameter_server_restarts_the_local_cluster_which_ends_at_the_exact_step(
        shapes, tmp_path):
    """SIGKILL the PS after the first checkpoint: the chief names it, the launcher restarts."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    args = ["pretrain", "--config", str(TINY), "--local-cluster", "workers=1,ps=1",
            "--timeout", "240", "trainer.strategy=parameter_server", "trainer.batch_size_per_replica=4",
            *overrides(shapes, tmp_path, "trainer.train_steps=20", "trainer.checkpoint_every=5")]
    process, lines = start_cli(args, env)
    try:
        deadline = time.time() + 240
        while not tf.train.latest_checkpoint(str(tmp_path)):
            assert process.poll() is None and time.time() < deadline, "".join(lines)[-3000:]
            time.sleep(0.2)
        ps = next(int(m.group(1)) for m in map(re.compile(r"started ps/0 \(pid (\d+)").search, lines) if m)
        os.kill(ps, signal.SIGKILL)
        assert process.wait(timeout=300) == 0, "".join(lines)[-3000:]
    finally:
        process.kill()
    log = "".join(lines)
    saved = re.search(r"ps/0 at 127\.0\.0\.1:\d+ is gone; resume from checkpoint ckpt-(\d+)", log)
    assert saved, log[-3000:]
    assert "restarting the cluster from its last checkpoint (1 of 3 restarts)" in log
    assert f"at step {saved.group(1)}" in log
    assert final_step(tmp_path) == 20
    assert (tmp_path / FINAL_MODEL).is_file()


@pytest.mark.slow
def test_synchronous_workers_and_their_evaluator_all_exit_after_an_epoch_based_run(shapes, tmp_path):
    """Two replicas in sync: an epoch of 32 examples at 4 per replica is 4 steps, not 8;
    the evaluator stops on the chief's final step instead of waiting for step 8."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    args = ["pretrain", "--config", str(TINY), "--local-cluster", "workers=2,evaluator=1",
            "--timeout", "240", "trainer.strategy=multi_worker", "trainer.batch_size_per_replica=4",
            *overrides(shapes, tmp_path, "trainer.train_epochs=1", "trainer.train_steps=0",
                       "trainer.examples_per_epoch=32", "trainer.checkpoint_every=2")]
    process, lines = start_cli(args, env)
    try:
        assert process.wait(timeout=300) == 0, "".join(lines)[-3000:]
    finally:
        process.kill()
    assert final_step(tmp_path) == 4
    assert json.loads((tmp_path / "final_step.json").read_text()) == {"step": 4}
    assert "4" in json.loads((tmp_path / "eval_results.json").read_text())


def write_records(path, feature):
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def test_a_tfrecord_without_the_label_feature_names_file_and_feature(tmp_path):
    path = tmp_path / "train-00000-of-00001"
    write_records(path, {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))})
    config = load_config(PretrainConfig, TINY, [f"data.train={path}", "data.eval=", "data.synthetic=false"])
    with pytest.raises(UserError, match=f"{path}: records lack the feature 'image/class/label'"):
        ClassificationTask(config)


def test_bad_input_fails_with_one_line_from_the_cli(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    cases = [
        (["data.format=directory", f"data.train={tmp_path}/empty"], "empty: no images in class folders"),
        ([f"data.train={tmp_path}/none-*"], "no TFRecord files match"),
        (["trainer.learning_rate.warmup=5"], "unknown config key 'trainer.learning_rate.warmup'"),
        (["trainer.precision=float32"], "config key 'trainer.precision' is now 'trainer.dtype_policy'"),
        (["trainer.strategy=async"], "strategy: 'async' is not one of"),
    ]
    for extra, message in cases:
        args = ["pretrain", "--config", str(TINY), "data.synthetic=false", "data.eval=", *extra]
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": ')
    assert main(["pretrain", "--config", str(TINY), f"trainer.model_dir={tmp_path}",
                 f"data.train={tmp_path}/data/train-*", f"data.eval={tmp_path}/data/validation-*"]) == 2
    assert "TF_CONFIG: not valid JSON" in capsys.readouterr().err


def test_class_directories_label_from_1_in_sorted_order_and_preprocess_to_unit_range(tmp_path):
    synthetic.write_class_directories(tmp_path, num_classes=3, images_per_class=2, image_size=40)
    config = load_config(PretrainConfig, TINY, ["data.format=directory", f"data.train={tmp_path}",
                                                f"data.eval={tmp_path}", "data.image_size=32"])
    images, labels = next(iter(data.eval_dataset(config.data, batch_size=6)))
    assert labels.numpy().tolist() == [1, 1, 2, 2, 3, 3]
    assert images.shape == (6, 32, 32, 3)
    assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    batch, _ = next(iter(data.train_dataset(config.data, tf.distribute.InputContext(), batch_size=4)))
    assert batch.shape == (4, 32, 32, 3) and float(tf.reduce_max(batch)) > 0.5
