"""`segment`, `classify` and `convert` through the command line entry point."""

import json
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.cli.classify import imagenet_names
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.io import read_image
from conftest import REPO
from helpers import central_crop_resized, randomize_weights
from test_weights import official_arrays, write_official_checkpoint


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    deeplab = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    randomize_weights(deeplab, seed=0, scale=0.2)
    deeplab.save(root / "deeplab.keras")
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=6)
    randomize_weights(classifier, seed=1, scale=0.2)
    classifier.save(root / "classifier.keras")
    rng = np.random.default_rng(2)
    images = []
    for name, size in (("street.jpg", (37, 45)), ("room.png", (50, 33))):
        path = root / name
        cv2.imwrite(str(path), rng.integers(0, 256, size + (3,)).astype("uint8"))
        images.append(str(path))
    not_image = root / "notes.png"
    not_image.write_text("not an image")
    return dict(root=root, deeplab=deeplab, classifier=classifier, images=images, not_image=str(not_image))


def test_segment_writes_labels_and_probabilities(files, tmp_path):
    out = tmp_path / "out"
    argv = ["segment", *files["images"], "--weights", str(files["root"] / "deeplab.keras"),
            "--output-dir", str(out), "--scales", "0.75", "1", "--flip", "--save-probabilities",
            "--precision", "float32"]  # pinned: `auto` is bfloat16 on AMX / AVX512_BF16 CPUs
    assert main(argv) == 0
    segmenter = Segmenter(files["deeplab"], scales=(0.75, 1.0), flip=True)
    for path, stem in zip(files["images"], ("street", "room")):
        image = read_image(path)
        labels = np.array(Image.open(out / f"{stem}.png"))
        probabilities = np.load(out / f"{stem}.npy")
        assert labels.dtype == np.uint8 and labels.shape == image.shape[:2]
        assert probabilities.dtype == np.float32 and probabilities.shape == image.shape[:2] + (4,)
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probabilities, segmenter.probabilities(image[None])[0], atol=1e-5)
        np.testing.assert_array_equal(labels, probabilities.argmax(axis=-1))


def test_classify_prints_top_k_probabilities(files, capsys):
    argv = ["classify", *files["images"], "--weights", str(files["root"] / "classifier.keras"),
            "--top-k", "6", "--format", "json"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == files["images"]
    for result in results:
        image = central_crop_resized(read_image(result["image"]), 0.875, 299) / 127.5 - 1.0
        expected = keras.ops.convert_to_numpy(files["classifier"](image[None]))[0]
        probabilities = [e["probability"] for e in result["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        for entry in result["top_k"]:
            assert entry["probability"] == pytest.approx(expected[entry["class"]], abs=1e-4)
    assert main(["classify", files["images"][0], files["not_image"], "--weights",
                 str(files["root"] / "classifier.keras"), "--top-k", "2"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 3
    assert captured.err.strip() == (
        f"deeplab-xception classify: error: {files['not_image']}: not a readable image")


def test_imagenet_class_names_follow_the_imagenet_synset_order(tmp_path, capsys):
    import importlib.util

    tfds = importlib.util.find_spec("tensorflow_datasets").submodule_search_locations[0]
    with open(os.path.join(tfds, "datasets", "imagenet2012", "labels.txt")) as f:
        synsets = f.read().split()
    shipped = (REPO / "deeplab_xception" / "data" / "imagenet_classes.txt").read_text()
    assert [line.split("\t")[0] for line in shipped.splitlines()] == synsets
    names = imagenet_names(1000)
    assert (names[0], names[1], names[134], names[517], names[999]) == (
        "tench", "goldfish", "crane", "crane", "toilet tissue")  # the bird and the machine
    assert imagenet_names(1001) == ["background"] + names and imagenet_names(6) is None
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=1001)
    classifier.save(tmp_path / "imagenet.keras")
    image = tmp_path / "gray.png"
    cv2.imwrite(str(image), np.full((40, 30, 3), 128, np.uint8))
    assert main(["classify", str(image), "--weights", str(tmp_path / "imagenet.keras"),
                 "--top-k", "3", "--format", "json"]) == 0
    for entry in json.loads(capsys.readouterr().out)[0]["top_k"]:
        assert entry["name"] == (["background"] + names)[entry["class"]]


def test_convert_writes_a_model_file_equal_to_the_checkpoint(files, tmp_path, capsys):
    model = files["deeplab"]
    prefix = write_official_checkpoint(tmp_path / "ckpt" / "model.ckpt", official_arrays(model))
    dst = tmp_path / "converted.keras"
    assert main(["convert", prefix, str(dst)]) == 0
    assert f"4 classes, output stride 16, {model.count_params():,} parameters" in capsys.readouterr().out
    images = np.random.default_rng(3).uniform(-1, 1, (1, 33, 41, 3)).astype("float32")
    np.testing.assert_allclose(keras.models.load_model(dst)(images), model(images), atol=1e-5)
    os.remove(dst)
    assert main(["convert", prefix, str(dst), "--num-classes", "21"]) == 2
    assert "--num-classes: " in (err := capsys.readouterr().err) and "has 4 classes, asked for 21" in err
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # nothing half-written

    mine, folder = tmp_path / "mine.keras", tmp_path / "folder.keras"
    mine.write_bytes(b"a model of mine")
    folder.mkdir()
    for dst, extra, message in [(mine, [], "already exists; give --overwrite to replace it"),
                                (folder, [], "is a folder; the output must be a .keras file"),
                                (folder, ["--overwrite"], "is a folder")]:
        assert main(["convert", prefix, str(dst), *extra]) == 2
        assert _error_line(capsys).startswith(f"deeplab-xception convert: error: {dst}: {message}")
    assert mine.read_bytes() == b"a model of mine" and not os.listdir(folder)
    assert main(["convert", prefix, str(mine), "--overwrite"]) == 0
    np.testing.assert_allclose(keras.models.load_model(mine)(images), model(images), atol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "folder.keras", "mine.keras"]


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_inputs_are_one_line_errors(files, tmp_path, capsys):
    weights = str(files["root"] / "deeplab.keras")
    out = str(tmp_path / "out")
    missing = str(tmp_path / "missing.jpg")
    assert main(["segment", missing, "--weights", weights, "--output-dir", out]) == 2
    assert _error_line(capsys) == f"deeplab-xception segment: error: {missing}: no such file"
    assert main(["segment", files["not_image"], "--weights", weights, "--output-dir", out]) == 2
    assert _error_line(capsys).endswith(f"{files['not_image']}: not a readable image")
    classifier = str(files["root"] / "classifier.keras")
    assert main(["classify", files["not_image"], "--weights", classifier]) == 2
    assert "not a readable image" in _error_line(capsys)
    assert main(["classify", files["images"][0], "--weights", weights]) == 2
    assert "holds a DeepLabV3Plus, not an image classifier" in _error_line(capsys)
    assert main(["segment", files["images"][0], "--weights", str(tmp_path / "none.keras"),
                 "--output-dir", out]) == 2
    assert "none.keras: no such file" in _error_line(capsys)
    foreign = tf.train.Checkpoint(step=tf.Variable(1)).write(str(tmp_path / "tf2" / "ckpt"))
    assert main(["segment", files["images"][0], "--weights", foreign, "--output-dir", out]) == 2
    assert "not a DeepLab checkpoint" in _error_line(capsys)
    assert not os.path.exists(out)


def test_convert_starts_a_deeplab_from_a_classifier_file_or_from_random_weights(
        files, tmp_path, capsys):
    classifier = files["classifier"]
    dst = tmp_path / "deeplab.keras"
    assert main(["convert", str(files["root"] / "classifier.keras"), "--kind", "deeplab",
                 "--num-classes", "3", str(dst)]) == 0
    deeplab = keras.models.load_model(dst)
    assert (deeplab.num_classes, deeplab.output_stride) == (3, 16)
    weighted = [layer for layer in classifier.backbone.layers if layer.weights]
    assert len(weighted) > 50
    for layer in weighted:  # the pretraining's backbone, whole
        for mine, theirs in zip(deeplab.backbone.get_layer(layer.name).weights, layer.weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert main(["convert", "random:xception_tiny", str(tmp_path / "random.keras"),
                 "--output-stride", "8"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"{tmp_path / 'random.keras'}: DeepLabV3Plus on xception_tiny, 21 classes, output stride 8")
    random = keras.models.load_model(tmp_path / "random.keras")
    fresh = build_model("deeplab", backbone="xception_tiny", output_stride=8)
    assert [w.shape for w in random.weights] == [w.shape for w in fresh.weights]
    assert main(["convert", "random:xception_66", str(tmp_path / "no.keras")]) == 2
    assert _error_line(capsys).endswith("unknown backbone 'xception_66'; choose one of xception, "
                                        "xception_41, xception_65, xception_71, xception_tiny")
    assert sorted(os.listdir(tmp_path)) == ["deeplab.keras", "random.keras"]


def test_evaluate_refuses_a_model_without_a_trained_deeplab_head(files, tmp_path, capsys):
    from deeplab_xception.segment.synthetic import write_synthetic_dataset

    classifier = str(files["root"] / "classifier.keras")
    data = write_synthetic_dataset(str(tmp_path / "shapes"), num_train=1, num_val=1, size=33)
    assert main(["evaluate", "--weights", classifier, "--data", data,
                 "--output-dir", str(tmp_path / "eval")]) == 2
    assert _error_line(capsys).endswith(
        f"{classifier}: holds a XceptionClassifier, not a segmentation model")
