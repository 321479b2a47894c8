"""One harness for every registered backbone and model kind, and the head on a foreign encoder.

Full-size variants are built once each (their heads share the backbone) and called on a
65x65 image; the round trips (config, .keras file, batch-norm folding, output stride)
run on the tiny variant and on a small non-Xception encoder.
"""

import json

import keras
import numpy as np
import pytest

from deeplab_xception import build_model, with_output_stride
from deeplab_xception.models.backbones import BACKBONES, VARIANTS, build_backbone, register_backbone
from deeplab_xception.runtime.multiply_adds import count_multiply_adds
from deeplab_xception.runtime.folding import fold_batch_norms
from deeplab_xception.models.build import HEADS, KINDS
from helpers import SmallConvEncoder, profiled_multiply_adds, randomize_weights

# -- parameter counts, computed independently of the package ------------------------------
# Units of the modified Xception as the reference table gives them: (depths, 1x1 conv shortcut).
EXIT = [((728, 1024, 1024), True), ((1536, 1536, 2048), False)]


def _units(entry, middle_units, middle=728, exit_units=EXIT):
    return [((w, w, w), True) for w in entry] + [((middle,) * 3, False)] * middle_units + exit_units


MODIFIED_LAYOUTS = {  # (units, channels of the stride-4 decoder tap)
    "xception_41": (_units((128, 256, 728), 8), 256),
    "xception_65": (_units((128, 256, 728), 16), 256),
    "xception_71": (_units((128, 256, 256, 728, 728), 16), 256),
    # Not published: xception_41's layout, narrow (its own definition).
    "xception_tiny": (_units((16, 32, 64), 2, 64, [((64, 96, 96), True), ((128, 128, 160), False)]), 32),
}
# keras.applications.Xception (Chollet's paper: 22,855,952 trainable), with and without its top.
CLASSIC = {"classifier": 22_910_480, "backbone": 20_861_480, "tap": 256}


def _norm(c):
    return 4 * c  # gamma, beta, moving mean and variance


def _separable(cin, cout):
    """Depthwise 3x3 + BN, pointwise + BN (the checkpoint layout)."""
    return 9 * cin + _norm(cin) + cin * cout + _norm(cout)


def _modified_backbone(units):
    total, cin = 27 * 32 + _norm(32) + 9 * 32 * 64 + _norm(64), 64
    for depths, projection in units:
        c = cin
        for depth in depths:
            total, c = total + _separable(c, depth), depth
        if projection:
            total += cin * depths[-1] + _norm(depths[-1])
        cin = depths[-1]
    return total, cin


def _deeplab_head(features, tap, classes):
    """ASPP (image pooling, 1x1, three separable), projection, decoder, logits with bias."""
    conv = lambda cin, cout: cin * cout + _norm(cout)  # noqa: E731
    aspp = 2 * conv(features, 256) + 3 * _separable(features, 256) + conv(5 * 256, 256)
    decoder = conv(tap, 48) + _separable(256 + 48, 256) + _separable(256, 256)
    return aspp + decoder + 256 * classes + classes


def expected_parameters(variant, kind, classes):
    if variant in MODIFIED_LAYOUTS:
        units, tap = MODIFIED_LAYOUTS[variant]
        backbone, features = _modified_backbone(units)
    else:
        backbone, features, tap = CLASSIC["backbone"], 2048, CLASSIC["tap"]
    head = {"backbone": 0, "classifier": features * classes + classes,
            "deeplab": _deeplab_head(features, tap, classes)}[kind]
    return backbone + head


def test_the_independent_count_reproduces_the_official_checkpoint(manifest):
    assert expected_parameters("xception_65", "deeplab", 21) == manifest["num_elements"]
    assert expected_parameters("xception_65", "backbone", 0) == manifest["backbone"]["num_elements"]
    assert expected_parameters("xception", "classifier", 1000) == CLASSIC["classifier"]


# -- every variant, every kind ---------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    """{variant: {kind: model}}, each backbone built once and shared by its heads."""
    cache = {}

    def get(variant):
        if variant not in cache:
            backbone = build_backbone(variant, output_stride=32 if variant == "xception" else 16)
            cache[variant] = {"backbone": backbone,
                              "deeplab": HEADS["deeplab"](backbone, num_classes=21),
                              "classifier": HEADS["classifier"](backbone)}
        return cache[variant]
    return get


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_and_kind_builds_runs_and_has_its_parameter_count(models, variant):
    built = models(variant)
    assert set(built) == set(KINDS)
    for kind, model in built.items():
        classes = getattr(model, "num_classes", 0)
        assert model.count_params() == expected_parameters(variant, kind, classes), kind
    assert built["classifier"].num_classes == VARIANTS[variant].imagenet_classes
    images = np.random.default_rng(0).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    features, logits, probabilities = keras.Model(
        built["backbone"].input, [built[k].output for k in ("backbone", "deeplab", "classifier")])(images)
    assert logits.shape == (1, 65, 65, 21)
    assert features.shape[-1] == built["backbone"].num_features
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)
    assert built["backbone"].pyramid_outputs[4].shape[1:] == (None, None, expected_tap(variant))


def expected_tap(variant):
    return MODIFIED_LAYOUTS[variant][1] if variant in MODIFIED_LAYOUTS else CLASSIC["tap"]


# -- round trips on small encoders -------------------------------------------------------------

@pytest.fixture
def small_conv():
    """The small encoder registered under a name, as a new family would be."""
    register_backbone("small_conv", SmallConvEncoder)
    yield "small_conv"
    BACKBONES.pop("small_conv")


# A DeepLab or classifier holds its backbone, so the backbone kind is covered inside them.
ROUND_TRIPS = [("xception_tiny", "deeplab"), ("xception_tiny", "classifier"), ("small_conv", "deeplab")]


@pytest.mark.parametrize("backbone,kind", ROUND_TRIPS)
def test_config_file_and_folding_round_trips(small_conv, tmp_path, backbone, kind):
    model = build_model(kind, backbone=backbone, num_classes=5 if kind != "backbone" else None,
                        output_stride=16 if kind != "classifier" else 32)
    randomize_weights(model, seed=1)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 37, 45, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(model(images, training=False))
    config = json.loads(json.dumps(model.get_config()))
    assert type(model).from_config(config).get_config() == model.get_config()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded(images, training=False), want, atol=1e-5)
    folded = fold_batch_norms(model)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)
    np.testing.assert_allclose(folded(images, training=False), want, rtol=1e-4, atol=1e-5)


# -- the DeepLab head on an encoder that is not Xception -----------------------------------------

def test_deeplab_composes_with_a_foreign_encoder(small_conv, tmp_path):
    """Built by name, trained a step, moved to output stride 8 (weights copied by layer name),
    saved and loaded, and its multiply-adds equal to the TF profiler's count."""
    model = build_model("deeplab", backbone=small_conv, num_classes=3, output_stride=16)
    assert isinstance(model.backbone, SmallConvEncoder) and model.backbone.output_stride == 16
    assert model.backbone.pyramid_outputs[4] is model.backbone.get_layer("stage2.relu").output
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 33, 33, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 33, 33)).astype("int32")
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_layer("decoder.decoder_conv1_pointwise").kernel.numpy()
    assert np.isfinite(model.train_on_batch(images, labels))
    assert not np.allclose(before, model.get_layer("decoder.decoder_conv1_pointwise").kernel.numpy())

    os8 = with_output_stride(model, 8)
    assert os8.output_stride == 8 and os8.get_layer("stage4").strides == (1, 1)
    assert os8.backbone.compute_output_spec(keras.KerasTensor((1, 33, 33, 3))).shape[1:3] == (5, 5)
    assert os8.get_layer("aspp1_depthwise").dilation_rate == (12, 12)
    for layer in model.layers:
        for a, b in zip(layer.weights, os8.get_layer(layer.name).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="cannot run at output stride 32"):
        with_output_stride(model, 32)

    os8.save(tmp_path / "os8.keras")
    loaded = keras.models.load_model(tmp_path / "os8.keras")
    np.testing.assert_allclose(loaded(images), os8(images), atol=1e-5)
    assert loaded.output_stride == 8

    ours = sum(paper for paper, _ in count_multiply_adds(loaded, (33, 33)).values())
    assert ours == profiled_multiply_adds(loaded, (33, 33), ["Conv2D", "DepthwiseConv2dNative", "MatMul"])
    assert set(count_multiply_adds(loaded, (33, 33))) == {"backbone", "aspp", "decoder", "logits"}
