"""Inference precision: `auto` follows the CPU's bfloat16 hardware; float32 is today's exact
path; bfloat16 computes what Keras' mixed_bfloat16 policy computes, logits in float32."""

import collections
import json
import math
import pathlib

import keras
import numpy as np
import pytest

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.compiled import FrozenGraph, compiled_call
from deeplab_xception.runtime.folding import fold_batch_norms
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.runtime import precision
from deeplab_xception.runtime.precision import (cpu_has_native_bf16, gpu_bfloat16_from, positions_per_call,
                                        resolve_precision, with_precision)
from helpers import randomize_weights

# First-processor lines as Linux prints them (flags abridged to the relevant ones).
SAPPHIRE_RAPIDS = ("flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 "
                   "amx_bf16 amx_tile amx_int8\n")
COOPER_LAKE = "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16\n"
ICE_LAKE = "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni\n"
EPYC_MILAN = "flags\t\t: fpu sse2 avx avx2 fma f16c vaes vpclmulqdq\n"
GRAVITON3 = "Features\t: fp asimd sve bf16 i8mm\n"
RESULTS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize("cpuinfo,native", [
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (ICE_LAKE, False), (EPYC_MILAN, False),
    (GRAVITON3, False), ("", False)])
def test_auto_is_bfloat16_only_where_the_cpu_has_it(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: some cpu\n" + cpuinfo)
    assert cpu_has_native_bf16(path) is native
    assert resolve_precision("auto", path) == ("bfloat16" if native else "float32")
    assert resolve_precision("float32", path) == "float32"
    assert resolve_precision("bfloat16", path) == "bfloat16"


def test_unreadable_cpuinfo_means_float32(tmp_path):
    assert resolve_precision("auto", tmp_path / "missing") == "float32"
    with pytest.raises(UserError, match="^precision: 'float16' is not one of auto"):
        resolve_precision("float16")


def test_auto_on_a_measured_cpu_picks_the_precision_that_ran_faster_there(tmp_path):
    """Against benchmarks/inference_cpu.py's records: on the flags of each CPU where ours was
    timed in both precisions, `auto` names the one with the lower median at every output
    stride (a Xeon with AMX so far: bfloat16, 2.3x faster)."""
    checked = 0
    for path in sorted(RESULTS.glob("inference_cpu*.json")):
        record = json.loads(path.read_text())
        rows = [row["runs"] for row in record.get("rows", [])
                if {"ours-float32", "ours-bfloat16"} <= set(row.get("runs", {}))]
        if not rows:
            continue
        faster = {min(("float32", "bfloat16"), key=lambda p: runs[f"ours-{p}"]["median"])
                  for runs in rows}
        assert len(faster) == 1, path.name  # one choice per CPU must be right at every OS
        cpuinfo = tmp_path / path.name
        cpuinfo.write_text("flags\t\t: " + " ".join(record["machine"]["isa_flags"]) + "\n")
        assert resolve_precision("auto", cpuinfo) == faster.pop(), path.name
        checked += 1
    assert checked >= 1


def _measured_on_gpu():
    """{(batch, output stride): (float32 ms, bfloat16 ms)} of xception_65 at 513 x 513, depthwise
    shifted, as benchmarks/gpu.py recorded them on an H200 (benchmarks/results/)."""
    measured = {}
    for path in sorted(RESULTS.glob("gpu_h200_*.json")):
        for config in json.loads(path.read_text())["configs"]:
            runs = [config["results"].get(f"ours {p} depthwise=shifted", {}).get("ms")
                    for p in ("float32", "bfloat16")]
            if config["job"] == "inference" and None not in runs:
                measured[config["batch"], config["output_stride"]] = tuple(runs)
    return measured


def test_auto_on_jax_is_bfloat16_only_on_gpus_and_calls_it_was_measured_faster_at(monkeypatch,
                                                                                   tmp_path):
    measured = _measured_on_gpu()
    assert len(measured) == 4
    positions = {(batch, stride): batch * math.ceil(513 / stride) ** 2 for batch, stride in measured}
    # The table `auto` decides by is the recorded measurements, rounded to 10 microseconds.
    assert sorted(precision.GPU_MEASURED) == sorted(
        (positions[key], round(f32, 2), round(bf16, 2)) for key, (f32, bf16) in measured.items())
    assert gpu_bfloat16_from([(10, 1.0, 0.9), (20, 1.0, 1.1), (30, 1.0, 0.8), (40, 1.0, 0.7)]) == 30
    assert gpu_bfloat16_from([(10, 1.0, 1.1)]) is None
    amx = tmp_path / "cpuinfo"
    amx.write_text(SAPPHIRE_RAPIDS)
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(precision, "_gpu_has_native_bf16", lambda: True)
    for (batch, stride), (f32, bf16) in measured.items():  # bfloat16 wherever it was faster
        shape = (batch, 513, 513, 3)
        assert positions_per_call(shape, stride) == positions[batch, stride]
        expected = "bfloat16" if bf16 < f32 else "float32"
        assert resolve_precision("auto", amx, positions[batch, stride]) == expected, (batch, stride)
        assert resolve_precision("float32", amx, positions[batch, stride]) == "float32"
    assert resolve_precision("auto", amx) == "float32"  # the call's size unknown
    for gpu in (False, None):  # a GPU without bfloat16, or none (JAX on the CPU)
        monkeypatch.setattr(precision, "_gpu_has_native_bf16", lambda: gpu)
        assert resolve_precision("auto", amx, positions[16, 8]) == "float32"


@pytest.fixture(scope="module")
def model():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    randomize_weights(model, scale=0.2)
    return model


def images(seed=0, shape=(2, 41, 53, 3)):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def test_float32_is_bit_for_bit_the_folded_frozen_graph(model):
    x = images()
    today = FrozenGraph(fold_batch_norms(model))(x)
    np.testing.assert_array_equal(compiled_call(model, "float32", 0, 0)(x), today)
    np.testing.assert_array_equal(compiled_call(model, freeze_after_pixels=0)(x), today)
    np.testing.assert_allclose(compiled_call(model)(x), model(x, training=False), atol=1e-5)
    assert with_precision(model, "float32") is model


def test_bfloat16_policies_are_those_build_model_gives(model):
    mixed = build_model("deeplab", backbone="xception_tiny", num_classes=4, dtype="mixed_bfloat16")
    rebuilt = with_precision(model, "bfloat16")
    assert ([(layer.name, layer.dtype_policy.name) for layer in rebuilt.layers]
            == [(layer.name, layer.dtype_policy.name) for layer in mixed.layers])
    assert rebuilt.get_layer("logits.semantic").dtype_policy.name == "float32"
    for ours, theirs in zip(rebuilt.weights, model.weights):
        assert ours.dtype == "float32"
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_bfloat16_graph_computes_what_keras_mixed_precision_computes(model):
    mixed = build_model("deeplab", backbone="xception_tiny", num_classes=4, dtype="mixed_bfloat16")
    mixed.set_weights(model.get_weights())
    x = images(1)
    run = compiled_call(model, "bfloat16", freeze_after_pixels=0)  # the frozen graph
    ours, reference, exact = np.asarray(run(x)), np.asarray(mixed(x)), np.asarray(model(x))
    assert ours.dtype == np.float32
    scale = np.abs(exact).max()
    # Same bfloat16 arithmetic up to where the folding rounds; far from float32's.
    assert np.abs(ours - reference).max() < 0.05 * scale
    assert np.abs(ours - exact).max() > 1e-4 * scale
    convs = collections.Counter(
        (node.op, keras.backend.standardize_dtype(_dtype(node.attr["T"].type)))
        for node in run.frozen.function.graph.as_graph_def().node
        if node.op in ("Conv2D", "DepthwiseConv2dNative"))
    assert convs[("Conv2D", "float32")] == 1  # the logits
    assert convs[("Conv2D", "bfloat16")] > 30 and convs[("DepthwiseConv2dNative", "bfloat16")] > 20
    assert convs[("DepthwiseConv2dNative", "float32")] == 0
    # dilated depthwise convs share one space-to-batch per run of layers, as in float32
    exact_run = compiled_call(model, "float32", 0, 0)
    exact_run(x)
    back = [_op_count(r.frozen.function, "BatchToSpaceND") for r in (run, exact_run)]
    dilated = sum(getattr(layer, "dilation_rate", (1, 1))[0] > 1 for layer in model.layers)
    assert back[0] == back[1] < dilated


def _op_count(function, op):
    return sum(node.op == op for node in function.graph.as_graph_def().node)


def _dtype(enum):
    import tensorflow as tf

    return tf.dtypes.as_dtype(enum).name


def test_segmenter_says_which_precision_ran(model):
    x = np.random.default_rng(2).integers(0, 256, (1, 41, 53, 3)).astype("uint8")
    exact = Segmenter(model, scales=(0.75, 1.0), flip=True)
    half = Segmenter(model, scales=(0.75, 1.0), flip=True, precision="bfloat16")
    assert (exact.precision, half.precision) == ("float32", "bfloat16")
    probabilities = half.probabilities(x)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, exact.probabilities(x), atol=0.05)


def test_budget_measure_reports_the_precision(capsys):
    argv = ["budget", "--backbone", "xception_tiny", "--input-size", "33", "33",
            "--output-stride", "16", "--measure", "1"]
    assert main(argv + ["--precision", "bfloat16"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].split()[-1] == "precision" and lines[2].split()[-1] == "bfloat16"
    assert captured.err.splitlines() == [  # what the minutes of a full-size --measure go to
        "measuring output stride 16 (1 of 1): 1 timed run at 33x33 in bfloat16"]
    assert main(argv + ["--format", "json"]) == 0
    assert '"precision": "' + resolve_precision("auto") + '"' in capsys.readouterr().out
