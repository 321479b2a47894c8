"""The models against the reference numbers: parameter counts, shapes, strides, parity."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model, load_model, with_output_stride
from deeplab_xception.errors import ArgumentError
from deeplab_xception.models.backbones import XceptionBackbone, reachable_output_strides
from deeplab_xception.runtime.folding import fold_batch_norms
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.models.layers import resize_align_corners, scale_dimension, weights_to_come
from helpers import randomize_weights


@pytest.mark.parametrize("fmt", ["weights.h5", "legacy.h5"])
def test_classic_xception_loads_keras_applications_weights(tmp_path, fmt):
    from keras.src.legacy.saving import legacy_h5_format
    import h5py

    reference = keras.applications.Xception(weights=None)
    randomize_weights(reference)
    path = tmp_path / f"xception.{fmt}"
    if fmt == "weights.h5":
        reference.save_weights(path)
    else:  # the layout of the released xception_weights_tf_dim_ordering_tf_kernels.h5
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    ours = build_model("classifier", backbone="xception", activation=None)
    ours.load_weights(path)
    images = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype("float32")
    expected = reference.get_layer("block14_sepconv2_act").output
    features = keras.Model(reference.input, expected)(images)
    np.testing.assert_allclose(ours.backbone(images), features, rtol=1e-5, atol=1e-5)
    probabilities = keras.ops.softmax(ours(images))
    np.testing.assert_allclose(probabilities, reference(images), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", ["xception_41", "xception_65"])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_shapes_follow_the_output_stride(variant, output_stride):
    model = build_model("deeplab", backbone=variant, output_stride=output_stride, num_classes=5)
    for height, width in [(129, 161), (513, 513)]:
        images = keras.KerasTensor((1, height, width, 3))
        features = model.backbone.compute_output_spec(images)
        expected = (scale_dimension(height, 1 / output_stride), scale_dimension(width, 1 / output_stride))
        assert tuple(features.shape[1:3]) == expected
        assert model.compute_output_spec(images).shape == (1, height, width, 5)
    logits = model(np.zeros((1, 129, 161, 3), "float32"))
    assert logits.shape == (1, 129, 161, 5)


def test_xception65_at_513_runs_at_output_stride_16_and_8():
    model = build_model("deeplab", backbone="xception_65", output_stride=16, upsample_logits=False)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 513, 513, 3)).astype("float32")
    assert model(images).shape == (1, 129, 129, 21)
    assert with_output_stride(model, 8)(images).shape == (1, 129, 129, 21)


def _dilations(model, suffix):
    return {l.name: (l.strides[0], l.dilation_rate[0]) for l in model.layers
            if l.name.endswith(suffix)}


def test_dilation_replaces_stride_past_the_output_stride():
    os16 = build_model("backbone", backbone="xception_65", output_stride=16)
    d = _dilations(os16, "_depthwise")
    assert d["exit_flow.block1.unit_1.xception_module.separable_conv3_depthwise"] == (1, 1)
    assert d["exit_flow.block2.unit_1.xception_module.separable_conv1_depthwise"] == (1, 2)
    assert d["entry_flow.block3.unit_1.xception_module.separable_conv3_depthwise"] == (2, 1)
    os8 = build_model("backbone", backbone="xception_65", output_stride=8, multi_grid=(1, 2, 4))
    d = _dilations(os8, "_depthwise")
    assert d["entry_flow.block3.unit_1.xception_module.separable_conv3_depthwise"] == (1, 1)
    assert d["middle_flow.block1.unit_16.xception_module.separable_conv2_depthwise"] == (1, 2)
    assert d["exit_flow.block1.unit_1.xception_module.separable_conv3_depthwise"] == (1, 2)
    assert [d[f"exit_flow.block2.unit_1.xception_module.separable_conv{i}_depthwise"][1]
            for i in (1, 2, 3)] == [4, 8, 16]


def test_decoder_tap_is_the_stride4_batch_norm_output():
    for variant, block in [("xception_65", "block2"), ("xception_71", "block3")]:
        backbone = XceptionBackbone(variant, output_stride=16)
        tap = backbone.pyramid_outputs[4]
        name = f"entry_flow.{block}.unit_1.xception_module.separable_conv2_pointwise.BatchNorm"
        assert tap is backbone.get_layer(name).output
        assert backbone.compute_output_spec(keras.KerasTensor((1, 513, 513, 3))).shape[1] == 33
        assert keras.Model(backbone.input, tap).compute_output_spec(
            keras.KerasTensor((1, 513, 513, 3))).shape[1:3] == (129, 129)


def test_pyramid_holds_the_last_map_at_each_stride_and_the_output_at_its_own():
    """Recorded as the walk leaves each stride; at output stride 4 the output is the stride-4 map."""
    os8 = XceptionBackbone("xception_tiny", output_stride=8)
    assert sorted(os8.pyramid_outputs) == [2, 4, 8] and os8.pyramid_outputs[8] is os8.output
    tap = "entry_flow.block2.unit_1.xception_module.separable_conv2_pointwise.BatchNorm"
    assert os8.pyramid_outputs[4] is os8.get_layer(tap).output
    os4 = XceptionBackbone("xception_tiny", output_stride=4)
    assert sorted(os4.pyramid_outputs) == [2, 4] and os4.pyramid_outputs[4] is os4.output


def test_depthwise_layouts_differ_where_the_reference_says():
    def relus_after_depthwise(model):
        return sum(l.name.endswith("_depthwise.relu") for l in model.layers)

    checkpoint = XceptionBackbone("xception_65", depthwise_layout="checkpoint")
    paper = XceptionBackbone("xception_65", depthwise_layout="paper")
    plain = XceptionBackbone("xception_65", depthwise_layout="plain")
    assert relus_after_depthwise(checkpoint) == 3  # exit_flow/block2 only
    assert relus_after_depthwise(paper) == 3 * (3 + 16 + 1 + 1)
    assert relus_after_depthwise(plain) == 0
    assert paper.count_params() == checkpoint.count_params()
    depthwise_bn = sum(4 * l.input.shape[-1] for l in checkpoint.layers
                       if l.name.endswith("_depthwise.BatchNorm"))
    assert checkpoint.count_params() - plain.count_params() == depthwise_bn


def test_unreachable_output_stride_and_bad_options_are_clear_errors():
    assert reachable_output_strides("xception_65") == (4, 8, 16, 32)
    with pytest.raises(ValueError, match="output_stride: xception_65 cannot run at output stride 64"):
        XceptionBackbone("xception_65", output_stride=64)
    with pytest.raises(ValueError, match="unknown variant 'xception_99'"):
        XceptionBackbone("xception_99")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("deeplab", backbone="xception_tiny", num_classes=0)
    with pytest.raises(ValueError, match="kind: 'segmenter' is not one of deeplab, classifier, backbone"):
        build_model("segmenter", backbone="xception_tiny")
    with pytest.raises(ValueError, match="backbone: unknown backbone 'resnet'"):
        build_model("deeplab", backbone="resnet")
    with pytest.raises(TypeError, match="`kind` argument, not `task`"):
        build_model(task="deeplab", backbone="xception_tiny")
    with pytest.raises(ArgumentError, match="atrous_rates: a classifier model takes no atrous_rates"):
        build_model("classifier", backbone="xception_tiny", atrous_rates=(6, 12, 18))


def test_resize_matches_tf1_align_corners():
    images = tf.random.uniform((2, 7, 9, 3), seed=0)
    for size in [(13, 17), (4, 5), (1, 1), (7, 9)]:
        expected = tf.compat.v1.image.resize_bilinear(images, size, align_corners=True)
        np.testing.assert_allclose(resize_align_corners(images, size), expected, atol=1e-5)


def test_resize_runs_in_float64_under_a_float64_floatx():
    images = tf.random.uniform((1, 7, 9, 2), seed=1, dtype="float64")
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        resized = resize_align_corners(images, (13, 17))
    finally:
        keras.config.set_floatx(previous)
    assert resized.dtype == tf.float64
    expected = tf.compat.v1.image.resize_bilinear(images, (13, 17), align_corners=True)
    np.testing.assert_allclose(resized, expected, atol=1e-6)


def test_changing_output_stride_keeps_weights_and_rescales_rates():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3, atrous_rates=(6, 12, 18))
    os8 = with_output_stride(model, 8)
    assert os8.output_stride == 8 and os8.atrous_rates == (12, 24, 36)
    assert os8.get_layer("aspp1_depthwise").dilation_rate == (12, 12)
    for a, b in zip(model.get_weights(), os8.get_weights()):
        np.testing.assert_array_equal(a, b)
    default = with_output_stride(build_model("deeplab", backbone="xception_tiny"), 8)
    assert default.atrous_rates is None and default.get_layer("aspp3_depthwise").dilation_rate == (36, 36)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4, output_stride=16)
    randomize_weights(model, seed=3)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return model, path


def test_jax_backend_agrees_with_tensorflow(tiny_model_file, tmp_path):
    model, path = tiny_model_file
    images = np.random.default_rng(0).uniform(-1, 1, (2, 37, 45, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, numpy as np, keras, deeplab_xception\n"
        "assert keras.backend.backend() == 'jax'\n"
        "from deeplab_xception.runtime.compiled import compiled_call\n"
        "m = deeplab_xception.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], keras.ops.convert_to_numpy(m(x)))\n"
        "np.save(sys.argv[4], keras.ops.convert_to_numpy(compiled_call(m)(x)))\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "images.npy"),
                    str(tmp_path / "out.npy"), str(tmp_path / "folded.npy")], check=True, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model(images), atol=2e-4)
    np.testing.assert_allclose(np.load(tmp_path / "folded.npy"), model(images), atol=2e-4)


def test_single_scale_segmenter_is_the_models_softmax(tiny_model_file):
    model, _ = tiny_model_file
    images = np.random.default_rng(0).integers(0, 256, (1, 41, 53, 3)).astype("uint8")
    probabilities = Segmenter(model).probabilities(images)
    expected = keras.ops.softmax(model(images.astype("float32") * (2 / 255) - 1))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_segmenter_is_exported_and_names_a_batch_it_cannot_take(tiny_model_file):
    import deeplab_xception as dx
    from deeplab_xception.errors import UserError

    model, _ = tiny_model_file
    segmenter = dx.Segmenter(model)
    assert segmenter.precision == "float32"  # the API's default: exact
    image = np.zeros((41, 53, 3), np.uint8)
    for bad, shape in [(image, "(41, 53, 3); one image is images[None]"),
                       (image[None, ..., :1], "(1, 41, 53, 1)")]:
        for method in (segmenter.labels, segmenter.probabilities):
            with pytest.raises(UserError) as error:
                method(bad)
            assert str(error.value) == f"images: expected a batch N x H x W x 3, got shape {shape}"
    assert segmenter.labels(image[None]).shape == (1, 41, 53)


def test_segmenter_runs_one_graph_for_images_of_every_size(tiny_model_file):
    model, _ = tiny_model_file
    segmenter = Segmenter(model, scales=(0.75, 1.0), flip=True)
    assert segmenter.logits_model.input_shape == (None, None, None, 3)
    logits_layer = keras.Model(model.input, model.get_layer("logits.semantic").output)
    for height, width in [(33, 41), (57, 35), (64, 64)]:
        images = np.random.default_rng(height).uniform(-1, 1, (2, height, width, 3)).astype("float32")
        np.testing.assert_allclose(segmenter.logits_model(images), logits_layer(images), atol=1e-5)


@pytest.mark.parametrize("layout", ["checkpoint", "paper", "plain"])
def test_folding_batch_norms_into_convs_keeps_the_outputs(layout):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4, depthwise_layout=layout,
                        input_shape=(None, None, 3))
    randomize_weights(model, seed=4)
    folded = fold_batch_norms(model)

    def count(m, layer_class):
        return sum(isinstance(layer, layer_class) for layer in m.layers)

    def biased_convs(m):
        return sum(getattr(layer, "use_bias", False) for layer in m.layers
                   if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))

    assert count(model, keras.layers.BatchNormalization) > 0
    assert count(folded, keras.layers.BatchNormalization) == 0
    assert biased_convs(folded) == biased_convs(model) + count(model, keras.layers.BatchNormalization)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 37, 45, 3)).astype("float32")
    np.testing.assert_allclose(folded(images), model(images), rtol=1e-4, atol=1e-5)


def test_dtype_policy_reaches_every_layer_and_logits_stay_float32(tmp_path):
    """mixed_bfloat16: bfloat16 compute with float32 weights everywhere but the logits,
    kept across save/load and a change of output stride, and close to the float32 model."""
    mixed = build_model("deeplab", backbone="xception_tiny", num_classes=3, dtype="mixed_bfloat16")
    exact = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    randomize_weights(exact)
    mixed.set_weights(exact.get_weights())
    float32_layers = {layer.name for layer in mixed.layers
                      if layer.dtype_policy.compute_dtype == "float32"}
    assert float32_layers == {"images", "logits.semantic", "logits.resize"}
    assert all(w.dtype == "float32" for w in mixed.weights)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(mixed(images, training=False))
    want = keras.ops.convert_to_numpy(exact(images, training=False))
    assert got.dtype == np.float32
    assert 0 < np.abs(got - want).max() < 0.05 * np.abs(want).max()
    path = str(tmp_path / "mixed.keras")
    mixed.save(path)
    loaded = keras.models.load_model(path)
    for model in (loaded, with_output_stride(loaded, 8)):
        assert model.get_layer("decoder.decoder_conv1_pointwise").dtype_policy.name == "mixed_bfloat16"
        assert model.get_layer("entry_flow.conv1_1").compute_dtype == "bfloat16"


def test_loading_builds_from_zeros_and_fresh_builds_stay_official(tmp_path):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    randomize_weights(model, seed=3)
    model.save(tmp_path / "model.keras")
    loaded = load_model(str(tmp_path / "model.keras"))
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
    for ours, saved in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(ours.numpy(), saved.numpy())

    def backbone_kernels(network):
        return np.concatenate([layer.weights[0].numpy().ravel() for layer in network.backbone.layers
                               if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))])

    with weights_to_come():
        assert not backbone_kernels(build_model("deeplab", backbone="xception_tiny", num_classes=3)).any()
    fresh = backbone_kernels(build_model("deeplab", backbone="xception_tiny", num_classes=3))
    # The official stddev 0.09, truncated at two of them: a standard deviation of 0.0796.
    assert abs(fresh.std() - 0.0796) < 0.004 and np.abs(fresh).max() <= 0.18


def test_output_stride_4_keeps_the_weights_without_a_decoder_and_says_why_not_with_one():
    """Every stride the registry reaches is a choice of segment, export and convert: at 4 the
    decoder's stride-4 tap is the encoder's output, so a decoder's weights no longer fit."""
    from deeplab_xception.cli import main

    with pytest.raises(SystemExit) as parsed:  # parsed, then --help stops it
        main(["segment", "x.png", "--weights", "w", "--output-dir", "o", "--output-stride", "4",
              "--help"])
    assert parsed.value.code == 0
    plain = build_model("deeplab", backbone="xception_tiny", num_classes=3, decoder=False)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 33, 33, 3)).astype("float32")
    at4 = with_output_stride(plain, 4)
    assert at4.output_stride == 4 and at4(images).shape == (1, 33, 33, 3)
    with pytest.raises(ValueError, match=r"^output_stride: deeplabv3plus's weights do not fit it "
                                         r"at output stride 4 \(copy by name: decoder\."):
        with_output_stride(build_model("deeplab", backbone="xception_tiny", num_classes=3), 4)
