"""Fine-tuning learns (from scratch and from a pretrained backbone); evaluation counts right."""

import json
import os

import cv2
import keras
import numpy as np
import pytest

from deeplab_xception import build_model, with_output_stride
from deeplab_xception.cli import main
from deeplab_xception.config import load_config
from deeplab_xception.errors import UserError
from deeplab_xception.inference import Segmenter
from deeplab_xception.preprocessing import IGNORE_LABEL
from deeplab_xception.io import write_image
from deeplab_xception.training.trainer import apply_warm_start
from deeplab_xception.weights.transfer import load_matching_weights
from segment.config import SegmentConfig
from segment.datasets import load_dataset
from segment.evaluate import evaluate
from segment.synthetic import CLASSES, make_example, write_synthetic_dataset
from segment.task import SegmentationTask

TINY = "segment_tiny.yaml"  # shipped with the package, found by name


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_synthetic_dataset(str(tmp_path_factory.mktemp("data") / "shapes"),
                                   num_train=48, num_val=16, size=65, seed=0)


@pytest.fixture(scope="module")
def val_with_ignore(tmp_path_factory):
    """Validation images of another size, with a band of ignored pixels in every mask."""
    root = write_synthetic_dataset(str(tmp_path_factory.mktemp("data") / "val"),
                                   num_train=1, num_val=6, size=49, seed=5)
    for index in range(6):
        path = os.path.join(root, "masks", f"val_{index:04d}.png")
        mask = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        mask[:5] = IGNORE_LABEL
        write_image(path, mask)
    return root


def _overrides(shapes, model_dir, *extra):
    return [f"data.root={shapes}", f"trainer.model_dir={model_dir}", *extra]


def _finetune(shapes, model_dir, *extra):
    assert main(["finetune", "--config", TINY, *_overrides(shapes, model_dir, *extra)]) == 0
    return keras.models.load_model(os.path.join(model_dir, "model.keras"))


def _background_only_miou(dataset):
    """mIoU of predicting background everywhere: the chance level to beat."""
    labels = np.concatenate([dataset.read(i)[1].ravel() for i in range(len(dataset))])
    return float(np.mean(labels == 0)) / dataset.num_classes


@pytest.fixture(scope="module")
def scratch_model(shapes, tmp_path_factory):
    return _finetune(shapes, str(tmp_path_factory.mktemp("scratch")))


@pytest.mark.slow
def test_finetuning_from_scratch_learns_the_shapes(shapes, scratch_model):
    val = load_dataset("generic", shapes, "val")
    untrained = SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={shapes}"]))
    untrained_miou = evaluate(untrained.build_model(), val)[0]["mean_iou"]
    report, _ = evaluate(scratch_model, val)
    assert _background_only_miou(val) < 0.25 and untrained_miou < 0.25
    assert report["mean_iou"] > 0.6, report
    assert min(report["per_class_iou"].values()) > 0.4, report


def _pretrain_classifier(path, steps=40):
    """A classifier trained to name the largest shape of an image, saved as model.keras."""
    rng = np.random.default_rng(1)
    images, targets = [], []
    for _ in range(64):
        image, mask = make_example(rng, 65)
        counts = np.bincount(mask.ravel(), minlength=len(CLASSES))
        images.append(image.astype("float32") * (2 / 255) - 1)
        targets.append(int(np.argmax(counts[1:])) + 1)
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=len(CLASSES),
                             activation=None)
    classifier.compile(keras.optimizers.SGD(0.02, momentum=0.9),
                       keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = classifier.fit(np.stack(images), np.array(targets), batch_size=8,
                             epochs=steps // 8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    classifier.save(path)
    return classifier


@pytest.mark.slow
def test_finetuning_from_a_pretrained_classifier(shapes, tmp_path):
    path = str(tmp_path / "pretrained.keras")
    classifier = _pretrain_classifier(path)
    init = [f"init.weights={path}"]
    task = SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={shapes}", *init]))
    started = task.build_model()
    apply_warm_start(started, task.warm_start(started))
    for name in ("entry_flow.conv1_1", "middle_flow.block1.unit_2.xception_module.separable_conv3_pointwise",
                 "exit_flow.block2.unit_1.xception_module.separable_conv3_pointwise.BatchNorm"):
        for ours, theirs in zip(started.get_layer(name).weights, classifier.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())

    model = _finetune(shapes, str(tmp_path / "run"), *init)
    report, _ = evaluate(model, load_dataset("generic", shapes, "val"))
    assert report["mean_iou"] > 0.6, report

    with pytest.raises(UserError, match="has no logits.semantic layer"):
        task = SegmentationTask(load_config(SegmentConfig, TINY, [
            f"data.root={shapes}", *init, "init.last_layer=true"]))
        fresh = task.build_model()
        apply_warm_start(fresh, task.warm_start(fresh))


def _numpy_confusion(model, dataset, output_stride, scales, flip):
    segmenter = Segmenter(with_output_stride(model, output_stride), scales=scales, flip=flip)
    n = dataset.num_classes
    confusion = np.zeros((n, n), np.int64)
    for index in range(len(dataset)):
        image, label = dataset.read(index)
        predicted = segmenter.labels(image[None])[0]
        valid = label != IGNORE_LABEL
        confusion += np.bincount(label[valid].astype(int) * n + predicted[valid],
                                 minlength=n * n).reshape(n, n)
    return confusion


@pytest.mark.slow
@pytest.mark.parametrize("output_stride,scales,flip", [
    (16, (1.0,), False), (8, (1.0,), False), (16, (0.75, 1.0, 1.25), True), (8, (0.5, 1.25), True)])
def test_evaluation_matches_a_numpy_confusion_matrix(scratch_model, val_with_ignore, output_stride,
                                                     scales, flip):
    dataset = load_dataset("generic", val_with_ignore, "val")
    report, confusion = evaluate(scratch_model, dataset, scales=scales, flip=flip,
                                 output_stride=output_stride)
    expected = _numpy_confusion(scratch_model, dataset, output_stride, scales, flip)
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.sum() == len(dataset) * 44 * 49  # 5 ignored rows of 49x49 left out
    assert (np.count_nonzero(expected.sum(0)) > 1), "predictions must not be constant"
    iou = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
    assert report["mean_iou"] == pytest.approx(np.nanmean(iou), abs=1e-12)
    assert report["output_stride"] == output_stride and report["scales"] == list(scales)
    for name, value in zip(CLASSES, iou):
        assert report["per_class_iou"][name] == pytest.approx(value, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((0.75, 1.25), True)])
def test_bfloat16_keeps_the_trained_models_labels_and_miou(scratch_model, shapes, scales, flip):
    """float32 is the reference; bfloat16 may differ only at near-ties."""
    val = load_dataset("generic", shapes, "val")
    images = np.stack([val.read(i)[0] for i in range(len(val))])
    truth = np.stack([val.read(i)[1] for i in range(len(val))])
    mean_iou = {}
    for precision in ("float32", "bfloat16"):
        segmenter = Segmenter(scratch_model, scales, flip, precision=precision)
        assert segmenter.precision == precision
        metric = keras.metrics.MeanIoU(len(CLASSES), sparse_y_true=True, sparse_y_pred=True)
        labels = segmenter.labels(images)
        metric.update_state(truth, labels)
        mean_iou[precision] = (float(metric.result()), labels)
    (exact, exact_labels), (half, half_labels) = mean_iou["float32"], mean_iou["bfloat16"]
    assert exact > 0.6 and abs(half - exact) <= 0.005, (half, exact)
    assert np.mean(exact_labels == half_labels) >= 0.99


@pytest.mark.slow
def test_evaluate_command_writes_the_report(scratch_model, val_with_ignore, tmp_path):
    weights = str(tmp_path / "model.keras")
    scratch_model.save(weights)
    out = tmp_path / "eval"
    assert main(["evaluate", "--weights", weights, "--data", val_with_ignore, "--split", "val",
                 "--output-stride", "8", "--scales", "0.75", "1.0", "--flip",
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    expected, confusion = evaluate(scratch_model, load_dataset("generic", val_with_ignore, "val"),
                                   scales=(0.75, 1.0), flip=True, output_stride=8)
    assert report["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert report["precision"] == "float32"  # the default, so the mIoU is exact
    assert report["confusion_matrix"] == confusion.tolist()
    table = (out / "per_class_iou.txt").read_text()
    assert all(name in table for name in CLASSES)
    assert f"{100 * expected['mean_iou']:6.2f}" in table
    assert cv2.imread(str(out / "confusion_matrix.png")) is not None
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "per_class_iou.txt", "report.json"]


@pytest.mark.slow
def test_class_lists_that_do_not_match_the_checkpoint_fail(scratch_model, shapes, tmp_path, capsys):
    weights = str(tmp_path / "model.keras")
    scratch_model.save(weights)
    root = write_synthetic_dataset(str(tmp_path / "five"), num_train=2, num_val=2, size=33)
    with open(os.path.join(root, "classes.txt"), "a") as f:
        f.write("star\n")
    assert main(["evaluate", "--weights", weights, "--data", root, "--output-dir",
                 str(tmp_path / "eval")]) == 2
    assert "the class list has 5 classes but the model predicts 4" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()

    assert main(["finetune", "--config", TINY, *_overrides(root, tmp_path / "run"),
                 f"init.weights={weights}", "init.last_layer=true"]) == 2
    assert "the checkpoint has 4 classes but the class list has 5" in capsys.readouterr().err
    assert not (tmp_path / "run" / "model.keras").exists()


def test_frozen_batch_norm_is_not_trained(shapes):
    task = SegmentationTask(load_config(SegmentConfig, TINY, [
        f"data.root={shapes}", "model.fine_tune_batch_norm=false"]))
    model = task.build_model()
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.trainable for layer in norms)
    assert all(layer.momentum == 0.9 for layer in norms)  # the tiny config's short-run decay
    assert not any("BatchNorm" in w.path for w in model.trainable_weights)


@pytest.mark.parametrize("name,crop,learning_rate,steps", [
    ("voc", (513, 513), 0.007, 30000), ("cityscapes", (769, 769), 0.01, 90000)])
def test_configs_follow_the_papers_recipe(name, crop, learning_rate, steps):
    config = load_config(SegmentConfig, f"segment_{name}.yaml")
    assert config.data.format == name and config.data.crop_size == crop
    assert (config.model.backbone, config.model.output_stride) == ("xception_65", 16)
    assert config.model.atrous_rates == (6, 12, 18) and config.model.decoder
    assert (config.data.min_scale, config.data.max_scale, config.data.flip) == (0.5, 2.0, True)
    trainer = config.trainer.validate()
    assert trainer.learning_rate.name == "poly" and trainer.learning_rate.power == 0.9
    assert trainer.learning_rate.initial == learning_rate and trainer.total_steps() == steps
    assert trainer.optimizer.momentum == 0.9 and trainer.weight_decay == 4e-5
    assert config.model.fine_tune_batch_norm and trainer.batch_size_per_replica >= 12


@pytest.mark.slow
def test_mixed_bfloat16_finetuning_learns_the_shapes_as_float32_does(shapes, scratch_model, tmp_path):
    """bf16 compute, float32 variables; the trained weights run in a float32 model."""
    mixed = _finetune(shapes, str(tmp_path / "bf16"), "trainer.precision=mixed_bfloat16")
    assert mixed.get_layer("entry_flow.conv1_1").dtype_policy.name == "mixed_bfloat16"
    assert {w.dtype for w in mixed.weights} == {"float32"}
    as_float32 = SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={shapes}"])).build_model()
    load_matching_weights(as_float32, str(tmp_path / "bf16" / "model.keras"))
    val = load_dataset("generic", shapes, "val")
    ours, reference = evaluate(as_float32, val)[0], evaluate(scratch_model, val)[0]
    assert ours["mean_iou"] > 0.6 and abs(ours["mean_iou"] - reference["mean_iou"]) < 0.15, (
        ours, reference)
