"""Fine-tuning learns (from scratch and from a pretrained backbone); evaluation counts right."""

import json
import os

import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from deeplab_xception import build_model, with_output_stride
from deeplab_xception.cli import main
from deeplab_xception.config import load_config
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.io import read_image, write_image
from deeplab_xception.data.preprocessing import IGNORE_LABEL
from deeplab_xception.training.trainer import apply_warm_start
from deeplab_xception.weights.transfer import load_matching_weights
from deeplab_xception.segment import pipeline
from deeplab_xception.segment.config import SegmentConfig
from deeplab_xception.segment.datasets import load_dataset
from deeplab_xception.data.classes import read_class_list, write_class_list
from deeplab_xception.segment.evaluate import evaluate
from deeplab_xception.segment.synthetic import CLASSES, PALETTE, make_example, write_synthetic_dataset
from deeplab_xception.segment.task import SegmentationTask

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

    model = _finetune(shapes, str(tmp_path / "run"), *init, "trainer.train_steps=60")
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
    mixed = _finetune(shapes, str(tmp_path / "bf16"), "trainer.dtype_policy=mixed_bfloat16")
    assert mixed.get_layer("entry_flow.conv1_1").dtype_policy.name == "mixed_bfloat16"
    assert {w.dtype for w in mixed.weights} == {"float32"}
    as_float32 = SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={shapes}"])).build_model()
    load_matching_weights(as_float32, str(tmp_path / "bf16" / "model.keras"))
    val = load_dataset("generic", shapes, "val")
    ours, reference = evaluate(as_float32, val)[0], evaluate(scratch_model, val)[0]
    assert ours["mean_iou"] > 0.6 and abs(ours["mean_iou"] - reference["mean_iou"]) < 0.15, (
        ours, reference)


def test_a_bad_model_value_fails_before_any_data_is_read(tmp_path, capsys):
    missing = str(tmp_path / "no_such_dataset")
    with pytest.raises(UserError, match="model: backbone: unknown backbone 'xception_66'"):
        SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={missing}",
                                                           "model.backbone=xception_66"]))
    assert main(["finetune", "--config", TINY, f"data.root={missing}",
                 f"trainer.model_dir={tmp_path / 'run'}", "model.output_stride=12"]) == 2
    assert "model: output_stride" in capsys.readouterr().err
    assert not os.path.exists(missing)
    with pytest.raises(UserError, match="no such class list"):  # the data is what fails next
        SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={missing}",
                                                           "data.synthetic=false"]))


def test_the_tiny_config_writes_its_generated_set_on_first_use(tmp_path, capsys):
    """segment_tiny.yaml works from an empty folder, as pretrain_tiny.yaml does."""
    root = str(tmp_path / "shapes")
    task = SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={root}"]))
    assert capsys.readouterr().out == f"writing the generated shapes set to {root} (data.synthetic)\n"
    assert task.classes == CLASSES and len(task.train_set) == 96
    classes = os.path.join(root, "classes.txt")
    written = os.path.getmtime(classes)
    SegmentationTask(load_config(SegmentConfig, TINY, [f"data.root={root}"]))
    assert capsys.readouterr().out == "" and os.path.getmtime(classes) == written  # kept


def test_a_rotated_exif_photo_with_its_mask_trains_and_evaluates(tmp_path):
    """Masks are drawn on the stored pixels; a phone photo's EXIF rotation must not apply."""
    root = tmp_path / "phone"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        image, mask = make_example(rng, 64)
        image, mask = image[:40], mask[:40]  # stored 64 wide, 40 high
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: shown rotated 90 degrees
        Image.fromarray(image).save(root / "images" / f"{name}.jpg", exif=exif, quality=95)
        write_image(str(root / "masks" / f"{name}.png"), mask)
    (root / "train.txt").write_text("a\nb\n")
    (root / "val.txt").write_text("a\nb\n")
    write_class_list(str(root / "classes.txt"), CLASSES, PALETTE)
    photo = str(root / "images" / "a.jpg")
    assert read_image(photo).shape == (64, 40, 3)  # the segment CLI's reading: upright
    dataset = load_dataset("generic", str(root), "val")
    assert dataset.read(0)[0].shape == (40, 64, 3) and dataset.read(0)[1].shape == (40, 64)

    model = _finetune(str(root), str(tmp_path / "run"), "trainer.train_steps=2")
    assert main(["evaluate", "--weights", str(tmp_path / "run" / "model.keras"), "--data",
                 str(root), "--output-dir", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["num_images"] == 2 and report["num_pixels"] == 2 * 40 * 64
    assert model.num_classes == len(CLASSES)

    # The class names and colors are kept beside the model, and segment finds them there.
    names, palette = read_class_list(str(tmp_path / "run" / "model.classes.txt"))
    assert names == list(CLASSES) and np.array_equal(palette, PALETTE)
    assert main(["segment", photo, "--weights", str(tmp_path / "run" / "model.keras"),
                 "--output-dir", str(tmp_path / "out"), "--json"]) == 0
    segmented = json.loads((tmp_path / "out" / "a.json").read_text())
    assert {c["name"] for c in segmented["classes"]} <= set(CLASSES)
    with Image.open(tmp_path / "out" / "a.png") as png:
        assert png.getpalette()[:3 * len(CLASSES)] == np.asarray(PALETTE).ravel().tolist()


def _as_ade20k_model(model):
    """`model` (background + 3 shapes) as a 151-class ADE20K model: logit 0 ("other") copies
    background's and wins there, logits 1..4 are its classes, the rest never win."""
    ade = build_model("deeplab", backbone="xception_tiny", num_classes=151,
                      batch_norm_momentum=0.9)
    for layer in ade.layers:
        if layer.weights and layer.name != model.LOGITS:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    kernel, bias = model.get_layer(model.LOGITS).get_weights()
    wide_kernel = np.zeros(kernel.shape[:-1] + (151,), np.float32)
    wide_bias = np.full(151, -1e3, np.float32)
    wide_kernel[..., :5] = np.concatenate([kernel[..., :1], kernel], axis=-1)
    wide_bias[:5] = np.concatenate([bias[:1] + 1.0, bias])
    ade.get_layer(ade.LOGITS).set_weights([wide_kernel, wide_bias])
    return ade


@pytest.mark.slow
def test_an_ade20k_151_class_model_evaluates_with_other_left_out(scratch_model, tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    rng = np.random.default_rng(2)
    labels = {}
    for index in (1, 2, 3):
        name = f"ADE_val_{index:08d}"
        image, mask = make_example(rng, 49)
        stored = mask + 1  # shapes are ADE classes 2..4, background class 1 ...
        stored[:, :20][mask[:, :20] == 0] = 0  # ... or "other"
        labels[name] = stored
        write_image(str(root / "images" / "validation" / f"{name}.jpg"), image)
        Image.fromarray(stored, mode="L").save(root / "annotations" / "validation" / f"{name}.png")
    model = _as_ade20k_model(scratch_model)
    weights = str(tmp_path / "ade.keras")
    model.save(weights)
    out = tmp_path / "eval"
    assert main(["evaluate", "--weights", weights, "--format", "ade20k", "--data", str(root),
                 "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())

    segmenter = Segmenter(model)
    confusion = np.zeros((151, 151), np.int64)
    for name, stored in labels.items():
        image = pipeline.decode_image(str(root / "images" / "validation" / f"{name}.jpg")).numpy()
        predicted = segmenter.labels(image[None])[0]
        valid = stored != 0
        confusion += np.bincount(stored[valid].astype(int) * 151 + predicted[valid],
                                 minlength=151 * 151).reshape(151, 151)
    assert confusion[:, 0].sum() > 0 and np.trace(confusion) > 0, "the test needs both"
    np.testing.assert_array_equal(report["confusion_matrix"], confusion)
    tp = np.diag(confusion)[1:]
    union = (confusion.sum(0) + confusion.sum(1))[1:] - tp
    assert report["mean_iou"] == pytest.approx(np.mean(tp[union > 0] / union[union > 0]), abs=1e-12)
    assert report["per_class_iou"]["other"] is None and len(report["per_class_iou"]) == 151


@pytest.mark.slow
@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((0.75, 1.25), True)])
def test_eval_crop_pads_as_the_official_eval(scratch_model, tmp_path, scales, flip):
    """Image padded bottom/right with 127.5 and its label with 255, network run on the padded
    image, scored on the padded arrays: a numpy re-implementation of the official eval."""
    root = write_synthetic_dataset(str(tmp_path / "small"), num_train=1, num_val=3, size=33, seed=7)
    dataset = load_dataset("generic", root, "val")
    model = scratch_model
    crop = (49, 57)
    report, confusion = evaluate(model, dataset, scales=scales, flip=flip, eval_crop_size=crop)
    segmenter = Segmenter(model, scales=scales, flip=flip)
    n = len(CLASSES)
    expected = np.zeros((n, n), np.int64)
    for index in range(len(dataset)):
        image, label = dataset.read(index)
        padded = np.full((*crop, 3), 127.5, np.float32)
        padded[:33, :33] = image
        padded_label = np.full(crop, 255)
        padded_label[:33, :33] = label
        predicted = segmenter.labels(padded[None])[0]
        valid = padded_label != 255
        expected += np.bincount(padded_label[valid] * n + predicted[valid],
                                minlength=n * n).reshape(n, n)
    np.testing.assert_array_equal(confusion, expected)
    assert report["eval_crop_size"] == list(crop) and report["images_over_crop"] == 0
    if flip:
        return
    own_size = evaluate(model, dataset)[1]
    assert (own_size != confusion).any(), "padding must change image pooling"
    over = evaluate(model, dataset, eval_crop_size=(32, 64))
    np.testing.assert_array_equal(over[1], own_size)  # too big for the crop: at its own size
    assert over[0]["images_over_crop"] == 3


def test_eval_crop_defaults_to_the_zoo_entry_then_the_format():
    from deeplab_xception.cli.evaluate import eval_crop_size

    assert eval_crop_size(None, "xception65_cityscapes_trainfine", "generic") == (1025, 2049)
    assert eval_crop_size(None, "run/model.keras", "voc") == (513, 513)
    assert eval_crop_size(None, "run/model.keras", "generic") is None
    assert eval_crop_size(["none"], "xception65_coco_voc_trainaug", "voc") is None
    assert eval_crop_size(["65", "97"], "run/model.keras", "generic") == (65, 97)
    with pytest.raises(UserError, match="--eval-crop-size: expected two positive integers"):
        eval_crop_size(["513"], "run/model.keras", "voc")


def test_progress_bars_stay_out_of_logs(val_with_ignore, capsys):
    """stderr is no terminal here, as in a redirected log: no carriage-return bars."""
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    evaluate(model, load_dataset("generic", val_with_ignore, "val"))
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out and "evaluating" not in captured.err
