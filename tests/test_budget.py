"""The multiply-add budget against the paper's Table 5, the model zoo and TF's own profiler."""

import json

import keras
import matplotlib.image
import pytest

from deeplab_xception import build_model
from deeplab_xception.runtime.budget import budget
from deeplab_xception.runtime.multiply_adds import SECTIONS, count_multiply_adds
from deeplab_xception.cli import main
from deeplab_xception.errors import UserError
from helpers import profiled_multiply_adds

# DeepLabv3+ paper, Table 5: xception_65, 513x513, 21 classes, single scale.
TABLE5 = [  # (eval output stride, decoder, separable, billions of multiply-adds)
    (16, False, False, 68.00), (8, False, False, 240.85),
    (16, True, False, 89.76), (8, True, False, 262.59),
    (16, True, True, 54.17), (8, True, True, 177.10),
]
# Model zoo: xception65_coco_voc_trainaug, eval OS 8, scales 0.5:0.25:1.75, flip.
MODEL_ZOO_MULTISCALE = 3055.35
PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


@pytest.fixture(scope="module")
def table5_rows():
    """Each full-size configuration counted once, keyed like TABLE5."""
    rows = {}
    for decoder, separable in ((False, False), (True, False), (True, True)):
        for row in budget(output_strides=(8, 16), decoder=decoder, separable=separable):
            rows[row.eval_output_stride, decoder, separable] = row
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("stride,decoder,separable,billions", TABLE5)
def test_table5_single_scale_rows(table5_rows, stride, decoder, separable, billions):
    row = table5_rows[stride, decoder, separable]
    assert row.multiply_adds / 1e9 == pytest.approx(billions, rel=0.005)
    assert row.multiply_adds_exact <= row.multiply_adds


@pytest.mark.slow
def test_exact_count_is_several_percent_low_for_dense_heads(table5_rows):
    """Why the paper's convention matters: dense dilated 3x3 convs pad the most."""
    for (stride, decoder, separable), row in table5_rows.items():
        shortfall = 1 - row.multiply_adds_exact / row.multiply_adds
        if separable:
            assert shortfall < 0.003
        else:
            assert 0.03 < shortfall < 0.09


@pytest.mark.slow
def test_multiscale_flip_matches_the_model_zoo(manifest):
    (row,) = budget(output_strides=(8,), scales=PAPER_SCALES, flip=True)
    assert row.multiply_adds / 1e9 == pytest.approx(MODEL_ZOO_MULTISCALE, rel=0.005)
    assert row.parameters == manifest["num_elements"]


def _hand_model():
    """Every counted layer type, with dilation under SAME and VALID padding."""
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(6, 3, dilation_rate=3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, dilation_rate=2, depth_multiplier=2, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(5, 3, dilation_rate=2, padding="same", name="separable")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, name="dense")(x))


# name: (model, input size, how much more the whole graph may cost than the counted layers)
MODELS = {
    # Its bias adds and global pooling are large next to so small a conv budget.
    "hand": (_hand_model, (11, 13), 0.03),
    # DeepLab adds batch norm (a multiply and an add per element), the logits'
    # bias and the resizes: about 0.1% to 1% next to this narrow model's convs,
    # about 0.3% for xception_65 at 513x513.
    "tiny_dense_os8": (lambda: build_model("deeplab", "xception_tiny", output_stride=8, separable=False),
                       (65, 65), 0.02),
    "tiny_separable_os16": (lambda: build_model("deeplab", "xception_tiny", output_stride=16),
                            (57, 49), 0.02),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_counts_match_tensorflow_profiler(name):
    """The conv and matmul ops the paper counts agree exactly; the rest of the graph adds little."""
    build, size, tolerance = MODELS[name]
    model = build()
    ours = sum(paper for paper, _ in count_multiply_adds(model, size).values())
    assert ours == profiled_multiply_adds(model, size, ["Conv2D", "DepthwiseConv2dNative", "MatMul"])
    everything = profiled_multiply_adds(model, size, [".*"])
    assert ours < everything < ours * (1 + tolerance)


def test_exact_count_by_hand():
    """True output sizes: conv 11x13, depthwise (VALID, rate 2) and separable 7x9, dense 1."""
    counts = count_multiply_adds(_hand_model(), (11, 13))
    exact = sum(e for _, e in counts.values())
    conv = 11 * 13 * 6 * (3 * 3 * 3)
    depthwise = 7 * 9 * 12 * (3 * 3)
    separable = 7 * 9 * 12 * (3 * 3) + 7 * 9 * 12 * 5
    assert exact == conv + depthwise + separable + 5 * 7


def test_undilated_model_counts_the_same_in_both_conventions():
    (row,) = budget("backbone", "xception_tiny", (65, 65), output_strides=(32,))
    assert row.multiply_adds == row.multiply_adds_exact
    (row,) = budget("backbone", "xception_tiny", (65, 65), output_strides=(8,))
    assert row.multiply_adds > row.multiply_adds_exact
    assert row.breakdown["entry_flow"]["multiply_adds"] == row.breakdown["entry_flow"]["multiply_adds_exact"]


def test_breakdown_follows_the_model():
    full, = budget(backbone="xception_tiny", input_size=(65, 65), output_strides=(16,))
    assert list(full.breakdown) == [s for s in SECTIONS if s != "backbone"]
    assert sum(b["multiply_adds"] for b in full.breakdown.values()) == full.multiply_adds
    no_decoder, = budget(backbone="xception_tiny", input_size=(65, 65), output_strides=(16,),
                         decoder=False)
    assert "decoder" not in no_decoder.breakdown
    assert no_decoder.breakdown["aspp"] == full.breakdown["aspp"]


def test_classic_classifier_breakdown_and_dense_rule():
    row, = budget("classifier", "xception", (71, 71))
    assert row.eval_output_stride == 32 and row.num_classes == 1000
    assert list(row.breakdown) == ["entry_flow", "middle_flow", "exit_flow", "logits"]
    assert row.breakdown["logits"]["multiply_adds"] == 2048 * 1000
    assert row.parameters == keras.applications.Xception(weights=None).count_params()


def _main(argv):
    return main(["budget", *argv])


TINY = ["--backbone", "xception_tiny", "--input-size", "49", "57"]


def test_cli_json_rows_equal_the_api(capsys):
    assert _main(TINY + ["--format", "json", "--no-separable", "--scales", "0.5", "1", "--flip"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = budget(backbone="xception_tiny", input_size=(49, 57), separable=False,
                      scales=(0.5, 1.0), flip=True)
    assert [r["eval_output_stride"] for r in rows] == [8, 16, 32]
    for row, want in zip(rows, expected):
        assert row["multiply_adds"] == want.multiply_adds
        assert row["multiply_adds_exact"] == want.multiply_adds_exact
        assert row["parameters"] == want.parameters
        assert (row["decoder"], row["separable"], row["flip"]) == (True, False, True)
        assert row["scales"] == [0.5, 1.0] and row["input_size"] == [49, 57]


def test_cli_table_measure_and_plot(capsys, tmp_path):
    plot = tmp_path / "budget.png"
    assert _main(TINY + ["--output-stride", "16", "32", "--measure", "1", "--breakdown",
                         "--plot", str(plot)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "images/s" in lines[1] and "decoder (M)" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["16", "32"]
    assert all(float(line.split()[10]) > 0 for line in lines[2:])  # images/s column
    assert matplotlib.image.imread(plot).ndim == 3
    assert [p.name for p in tmp_path.iterdir()] == ["budget.png"]


@pytest.mark.parametrize("argv,message", [
    (["--output-stride", "2"], "--output-stride: xception_tiny cannot run at output stride 2"),
    (["--input-size", "0", "65"], "--input-size"),
    (["--backbone", "xception_99"], "unknown backbone 'xception_99'"),
    (["--scales", "1", "0"], "--scales"),
    (["--measure", "0"], "--measure"),
    (["--kind", "backbone", "--no-decoder"], "--kind deeplab only"),
    (["--kind", "classifier", "--backbone", "xception", "--output-stride", "16"],
     "--output-stride: xception cannot run at output stride 16"),
])
def test_cli_bad_arguments(capsys, argv, message):
    argv = ["--backbone", "xception_tiny", "--input-size", "33", "33"] + argv
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_plot_path_fails_before_counting(capsys, tmp_path):
    assert _main(TINY + ["--plot", str(tmp_path / "budget.xyz")]) == 2
    assert "budget.xyz" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_api_errors_are_user_errors():
    with pytest.raises(UserError, match="num_classes: must be positive"):
        budget(backbone="xception_tiny", num_classes=0)


def _kernels_run(model):
    """Counts of the kernels TensorFlow ran for the folded, frozen `model`, by op type."""
    import collections

    import numpy as np

    from deeplab_xception.runtime.compiled import FrozenGraph
    from deeplab_xception.runtime.folding import fold_batch_norms
    from deeplab_xception.runtime.timing import traced_kernels

    function = FrozenGraph(fold_batch_norms(model)).function
    kernels, _ = traced_kernels(function, np.ones((1, 33, 33, 3), "float32"))
    return collections.Counter(op for op, _, _ in kernels)


def test_measured_models_get_the_fusions_of_trained_ones():
    from deeplab_xception.models.layers import weights_to_come
    from deeplab_xception.runtime.timing import with_trained_shifts

    with weights_to_come():  # as budget builds what it times: zeros, batch-norm scales 1
        model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    kernels = {w.path: w.numpy().copy() for w in model.weights if w.path.endswith("kernel")}
    fresh = _kernels_run(model)
    with_trained_shifts(model)
    shifted = _kernels_run(model)
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        if name in ("moving_mean", "beta", "bias"):
            assert (weight.numpy() != 0).all(), weight.path
        elif name == "kernel":
            assert (weight.numpy() == kernels[weight.path]).all(), weight.path
    # A zero folded bias is dropped by TF's optimizer, and the conv + bias + ReLU with it.
    fused = [op for op in shifted if "Fused" in op]
    assert fused and not any("Fused" in op for op in fresh)
    assert shifted["Relu"] < fresh["Relu"] / 2
