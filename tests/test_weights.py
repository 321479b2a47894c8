"""Official checkpoint names, reading real TF1 checkpoints, `load_model` on every source, weights copied by name."""

import functools
import http.server
import os
import tarfile
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model, load_model
from deeplab_xception.models.backbones import XceptionBackbone, copy_weights_by_name
from deeplab_xception.models.classifier import XceptionClassifier
from deeplab_xception.models.deeplab import DeepLabV3Plus
from deeplab_xception.errors import UserError
from deeplab_xception.weights import ZOO, official_variables
from deeplab_xception.data.preprocessing import INCEPTION
from deeplab_xception.weights.official import OFFICIAL_SCOPES
from deeplab_xception.weights.transfer import copy_matching_weights, load_matching_weights
from helpers import randomize_weights


def _names_and_shapes(variables):
    return {v["name"]: tuple(v["shape"]) for v in variables}


def _mapping(model):
    return {name: tuple(v.shape) for name, v in official_variables(model).items()}


@pytest.fixture(scope="module")
def xception65():
    return XceptionBackbone("xception_65", output_stride=16)


def test_deeplab_names_are_the_official_checkpoints(manifest, xception65):
    assert _mapping(DeepLabV3Plus(xception65, num_classes=21)) == _names_and_shapes(manifest["variables"])


def test_head_options_change_names_as_the_official_graph_does(manifest, xception65):
    full = _names_and_shapes(manifest["variables"])
    variants = manifest["variants"]
    no_decoder = {n: s for n, s in full.items() if n not in variants["no_decoder_variables_removed"]}
    no_decoder.update(_names_and_shapes(variants["no_decoder_variables_added"]))
    assert _mapping(DeepLabV3Plus(xception65, decoder=False)) == no_decoder
    dense = {n: s for n, s in full.items() if n not in variants["non_separable_variables_removed"]}
    dense.update(_names_and_shapes(variants["non_separable_variables_added"]))
    assert _mapping(DeepLabV3Plus(xception65, separable=False)) == dense


def test_backbone_and_classifier_names_are_the_imagenet_checkpoints(manifest, xception65):
    backbone = _names_and_shapes(manifest["backbone"]["variables"])
    assert _mapping(xception65) == backbone
    classifier = dict(backbone, **_names_and_shapes(manifest["imagenet_classification_head"]["variables"]))
    assert _mapping(XceptionClassifier(xception65, num_classes=1001)) == classifier


def write_official_checkpoint(prefix, variables, slots=True):
    """Writes {name: array} the way the official trainer does: TF1 graph variables, a
    global step and Momentum slots, saved by tf.compat.v1.train.Saver."""
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        for name, value in variables.items():
            v1.get_variable(name, initializer=np.asarray(value, "float32"))
            if slots:
                v1.get_variable(name + "/Momentum", initializer=np.zeros(np.shape(value), "float32"))
        v1.train.get_or_create_global_step()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            return v1.train.Saver().save(session, os.fspath(prefix), write_meta_graph=False)


def official_arrays(model):
    return {name: keras.ops.convert_to_numpy(v) for name, v in official_variables(model).items()}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An xception_tiny DeepLabv3+ with random weights, saved in official names and as an archive."""
    model = build_model("deeplab", backbone="xception_tiny", num_classes=5, output_stride=16)
    randomize_weights(model)
    directory = tmp_path_factory.mktemp("official") / "train_logdir"
    prefix = write_official_checkpoint(directory / "model.ckpt", official_arrays(model))
    archive = directory.parent / "deeplab_tiny_2024_01_01.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in os.listdir(directory):
            tar.add(directory / name, arcname=f"deeplab_tiny/{name}")
    return model, prefix, archive


IMAGES = np.random.default_rng(1).uniform(-1, 1, (1, 41, 49, 3)).astype("float32")


def test_checkpoint_round_trips_through_every_source_form(tiny_checkpoint, tmp_path):
    model, prefix, archive = tiny_checkpoint
    reader = tf.train.load_checkpoint(prefix)
    assert "global_step" in reader.get_variable_to_shape_map()  # bookkeeping really is there
    expected = model(IMAGES)
    for source in (prefix, prefix + ".index", os.path.dirname(prefix), archive):
        loaded = load_model(source, cache_dir=tmp_path)
        assert isinstance(loaded, DeepLabV3Plus)
        assert (loaded.backbone.variant, loaded.num_classes, loaded.output_stride) == ("xception_tiny", 5, 16)
        np.testing.assert_allclose(loaded(IMAGES), expected, atol=1e-5)
    assert os.listdir(tmp_path / "extracted")  # the archive was unpacked once, into the cache


def test_url_is_downloaded_once_into_the_cache(tiny_checkpoint, tmp_path):
    model, _, archive = tiny_checkpoint
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=archive.parent)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        loaded = load_model(url, cache_dir=tmp_path)
        with pytest.raises(UserError, match="absent.tar.gz: download failed"):
            load_model(url.replace(archive.name, "absent.tar.gz"), cache_dir=tmp_path)
        np.testing.assert_allclose(loaded(IMAGES), model(IMAGES), atol=1e-5)
        cached = [tmp_path / "downloads" / n for n in os.listdir(tmp_path / "downloads")
                  if n.endswith(archive.name)]
        assert len(cached) == 1
        cached[0].write_bytes(cached[0].read_bytes()[:100])  # a tampered archive is replaced
        np.testing.assert_allclose(load_model(url, cache_dir=tmp_path)(IMAGES), model(IMAGES), atol=1e-5)
        assert cached[0].read_bytes() == archive.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_output_stride_option_keeps_the_weights(tiny_checkpoint, tmp_path):
    model, prefix, _ = tiny_checkpoint
    os8 = load_model(prefix, output_stride=8)
    assert os8.output_stride == 8
    for a, b in zip(model.get_weights(), os8.get_weights()):
        np.testing.assert_array_equal(a, b)
    saved = tmp_path / "tiny.keras"
    model.save(saved)
    reloaded = load_model(saved, output_stride=8)
    np.testing.assert_allclose(reloaded(IMAGES), os8(IMAGES), atol=1e-5)


def test_head_options_are_read_off_the_checkpoint(tmp_path):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3, decoder=False,
                        separable=False, depthwise_layout="plain")
    randomize_weights(model, seed=2)
    prefix = write_official_checkpoint(tmp_path / "model.ckpt", official_arrays(model), slots=False)
    loaded = load_model(prefix)
    assert (loaded.decoder, loaded.separable, loaded.backbone.depthwise_layout) == (False, False, "plain")
    np.testing.assert_allclose(loaded(IMAGES), model(IMAGES), atol=1e-5)


def test_imagenet_backbone_starts_a_deeplab_and_a_classifier(tmp_path):
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=7)
    randomize_weights(classifier, seed=4)
    held = official_arrays(classifier)
    prefix = write_official_checkpoint(tmp_path / "model.ckpt", held)
    loaded = load_model(prefix)
    assert isinstance(loaded, XceptionClassifier) and loaded.num_classes == 7
    np.testing.assert_allclose(loaded(IMAGES), classifier(IMAGES), atol=1e-6)
    deeplab = load_model(prefix, kind="deeplab", num_classes=4)
    assert deeplab.num_classes == 4 and deeplab(IMAGES).shape == (1, 41, 49, 4)
    ours = official_arrays(deeplab)
    backbone = [name for name in ours if name.startswith("xception_tiny/")]
    assert len(backbone) == len(official_variables(deeplab.backbone)) == len(held) - 2
    for name in backbone:
        np.testing.assert_array_equal(ours[name], held[name])


def _corrupt(tmp_path, arrays, change):
    arrays = dict(arrays)
    change(arrays)
    return write_official_checkpoint(tmp_path / "model.ckpt", arrays, slots=False)


def test_checkpoint_problems_are_user_errors_naming_the_variable(tiny_checkpoint, tmp_path):
    model, _, _ = tiny_checkpoint
    arrays = official_arrays(model)
    depthwise = "xception_tiny/entry_flow/block1/unit_1/xception_module/separable_conv1_depthwise/depthwise_weights"
    cases = [
        (lambda a: a.pop("aspp0/BatchNorm/beta"), "lacks the model's variable aspp0/BatchNorm/beta"),
        (lambda a: a.update({"aspp9/weights": np.zeros((1, 1, 2, 2))}),
         "has a variable the model lacks: aspp9/weights"),
        (lambda a: a.update({depthwise: np.zeros((3, 3, 64, 2))}),
         f"{depthwise} has shape \\[3, 3, 64, 2\\], the model needs \\[3, 3, 64, 1\\]"),
    ]
    for i, (change, message) in enumerate(cases):
        directory = tmp_path / str(i)
        prefix = _corrupt(directory, arrays, change)
        with pytest.raises(UserError, match=message):
            load_model(prefix)
    with pytest.raises(UserError, match="num_classes: .* has 5 classes, asked for 21"):
        load_model(tiny_checkpoint[1], num_classes=21)
    prefix = write_official_checkpoint(tmp_path / "truncated" / "model.ckpt", arrays)
    (data,) = (tmp_path / "truncated").glob("model.ckpt.data-*")
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    with pytest.raises(UserError, match=r"model\.ckpt: .* cannot be read; the checkpoint's \.data "
                                        r"files are truncated or corrupt \(IndexError\)$"):
        load_model(prefix)


def test_foreign_and_missing_checkpoints_are_user_errors(tmp_path):
    prefix = write_official_checkpoint(tmp_path / "resnet" / "model.ckpt",
                                       {"resnet_v1_50/conv1/weights": np.zeros((7, 7, 3, 8))})
    with pytest.raises(UserError, match="not a DeepLab checkpoint"):
        load_model(prefix)
    with pytest.raises(UserError, match="no such checkpoint"):
        load_model(tmp_path / "absent" / "model.ckpt")
    with pytest.raises(UserError, match="absent.tar.gz: no such file"):
        load_model(tmp_path / "absent.tar.gz")
    not_archive = tmp_path / "fake.tar.gz"
    not_archive.write_text("not an archive")
    with pytest.raises(UserError, match="fake.tar.gz: not a readable archive"):
        load_model(not_archive, cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match="directory holds no checkpoint"):
        load_model(tmp_path / "cache")


def test_zoo_records_are_complete():
    assert ZOO["xception65_coco_voc_trainaug"].results[0].miou == 0.8220
    for record in ZOO.values():
        assert record.backbone in OFFICIAL_SCOPES and record.kind in ("deeplab", "backbone")
        assert record.url.startswith("https://download.tensorflow.org/models/")
        assert record.license.startswith("Apache-2.0") and record.source.startswith("https://")
        assert record.preprocessing == INCEPTION
        assert record.url.endswith(".tar.gz")
        if record.kind == "deeplab":
            assert record.num_classes > 1 and record.results


def test_keras_xception_weights_load_as_the_classic_classifier(tmp_path):
    reference = build_model("classifier", backbone="xception", num_classes=10)
    randomize_weights(reference, seed=5)
    path = tmp_path / "xception.weights.h5"
    reference.save_weights(path)
    loaded = load_model(path, num_classes=10)
    images = np.random.default_rng(3).uniform(-1, 1, (1, 71, 71, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), reference(images), atol=1e-6)
    with pytest.raises(UserError, match="not Keras Xception classifier weights"):
        load_model(path, num_classes=3)


def test_keras_applications_notop_weights_load_as_the_classic_backbone(tmp_path):
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    reference = keras.applications.Xception(weights=None, include_top=False)
    randomize_weights(reference, seed=7)
    path = tmp_path / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:  # the layout of the released file
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    loaded = load_model(path)
    assert isinstance(loaded, XceptionBackbone) and loaded.variant == "xception"
    images = np.random.default_rng(4).uniform(-1, 1, (1, 71, 71, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), reference(images), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_xception65_checkpoint_round_trip(tmp_path, manifest):
    model = build_model("deeplab", backbone="xception_65", num_classes=21)
    randomize_weights(model, seed=6)
    prefix = write_official_checkpoint(tmp_path / "model.ckpt", official_arrays(model), slots=False)
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    assert {n: tuple(s) for n, s in shapes.items() if n != "global_step"} == _names_and_shapes(
        manifest["variables"])
    loaded = load_model(prefix)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-4)


def test_matching_weights_fill_the_backbone_and_leave_the_head(tmp_path):
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=5, input_shape=(33, 33, 3))
    randomize_weights(classifier, seed=1)
    classifier.save(tmp_path / "classifier.keras")
    deeplab = build_model("deeplab", backbone="xception_tiny", num_classes=3, input_shape=(33, 33, 3))
    backbone = [layer.name for layer in deeplab.backbone.layers if layer.weights]
    head = {layer.name: [w.numpy() for w in layer.weights] for layer in deeplab.layers
            if layer.weights and layer.name not in backbone}
    copied = load_matching_weights(deeplab, str(tmp_path / "classifier.keras"), required=backbone)
    assert sorted(copied) == sorted(backbone)
    for name in backbone:
        for ours, theirs in zip(deeplab.get_layer(name).weights, classifier.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for name, before in head.items():
        for ours, value in zip(deeplab.get_layer(name).weights, before):
            np.testing.assert_array_equal(ours.numpy(), value)

    with pytest.raises(UserError, match=f"classifier.keras: has no layer {next(iter(head))}"):
        load_matching_weights(deeplab, str(tmp_path / "classifier.keras"), required=list(head))


def test_matching_weights_skip_or_refuse_other_shapes():
    source = build_model("deeplab", backbone="xception_tiny", num_classes=4, input_shape=(33, 33, 3))
    randomize_weights(source, seed=2)
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3, input_shape=(33, 33, 3))
    weighted = [layer.name for layer in model.layers if layer.weights]
    copied = copy_matching_weights(model, source, "four.keras")
    assert sorted(copied) == sorted(set(weighted) - {"logits.semantic"})
    with pytest.raises(UserError, match=r"four.keras: layer logits.semantic has shapes \[\(1, 1, \d+, 4\)"):
        copy_matching_weights(model, source, "four.keras", required=["logits.semantic"])
    assert copy_matching_weights(model, source, "four.keras", skip={"decoder.feature_projection0"}) \
        == [name for name in copied if name != "decoder.feature_projection0"]

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense_other")])
    with pytest.raises(UserError, match="other.keras: no layer matches the model by name and shape"):
        copy_matching_weights(model, other, "other.keras")


class _TwoVariables(keras.layers.Layer):
    """A layer whose variables are created in the order given: the same names in another order."""

    def __init__(self, order, **kwargs):
        super().__init__(**kwargs)
        self.order = order

    def build(self, input_shape):
        for name in self.order:
            self.add_weight(shape=(2,), initializer="zeros", name=name)


def test_weights_are_copied_by_variable_name_never_by_order():
    def model(order, name):
        return keras.Sequential([keras.Input((2,)), _TwoVariables(order, name="pair")], name=name)

    source, target, rebuilt = model("ab", "source"), model("ba", "target"), model("ba", "rebuilt")
    for variable, value in zip(source.get_layer("pair").weights, ([1.0, 2.0], [3.0, 4.0])):
        variable.assign(value)
    assert copy_matching_weights(target, source, "source.keras", required=["pair"]) == ["pair"]
    copy_weights_by_name(source, rebuilt)
    for copy in (target, rebuilt):
        values = {v.name: v.numpy().tolist() for v in copy.get_layer("pair").weights}
        assert values == {"a": [1.0, 2.0], "b": [3.0, 4.0]}
