"""The command line answers `--help` without TensorFlow, and keeps native log lines quiet."""

import collections
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from deeplab_xception import build_model
from deeplab_xception.cli import COMMANDS
from helpers import randomize_weights

ENTRY = [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()"]
HEAVY = ("tensorflow", "keras", "jax", "cv2", "numpy")


def test_help_imports_no_framework_and_answers_at_once():
    script = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "from deeplab_xception.cli import COMMANDS, main\n"
        "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, argv\n"
        f"print(time.perf_counter() - start, [m for m in {HEAVY!r} if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    seconds, imported = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert imported == "[]"
    assert float(seconds) < 2.0  # all eleven help texts, on a busy machine; TensorFlow alone takes 6 s
    for name in COMMANDS:
        assert f"    {name}" in result.stdout


def test_name_lists_for_help_match_the_library():
    from deeplab_xception.models.backbones import BACKBONES, reachable_output_strides
    from deeplab_xception.cli import options
    from deeplab_xception.runtime.limits import DEFAULT_MAX_PIXELS
    from deeplab_xception.data.classes import NAMED
    from deeplab_xception.runtime.export import FORMATS as EXPORT_FORMATS
    from deeplab_xception.models import KINDS
    from deeplab_xception.runtime.precision import PRECISIONS
    from deeplab_xception.segment.datasets import FORMATS

    assert options.KINDS == KINDS
    assert options.DATASET_FORMATS == tuple(sorted(FORMATS))
    assert options.NAMED_DATASETS == tuple(sorted(NAMED)) == tuple(
        sorted(name for name, module in FORMATS.items() if hasattr(module, "CLASSES")))
    assert options.EXPORT_FORMATS == tuple(sorted(EXPORT_FORMATS))
    assert options.DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS
    assert options.PRECISIONS == PRECISIONS
    assert options.OUTPUT_STRIDES == tuple(sorted(set().union(
        *(reachable_output_strides(name) for name in BACKBONES))))


def test_native_log_lines_are_filtered_and_everything_else_passes():
    script = (
        "import os, sys\n"
        "from deeplab_xception.cli.quiet import filter_native_output\n"
        "filter_native_output()\n"
        "for line in [b'WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR',\n"
        "             b'I0000 00:00:1796121837.557908    5212 devices.cc:67] Number of eligible "
        "GPUs (core count >= 8, compute capability >= 0.0): 0',\n"
        "             b'2026-12-01 10:41:27.265412: I external/local_xla/xla/tsl/cuda/"
        "cudart_stub.cc:31] Could not find cuda drivers',\n"
        "             b'libpng error: IHDR: CRC error', b'kept from C++',\n"
        "             b'F0000 00:00:1.5 7 x.cc:1] Check failed: fatal lines stay']:\n"
        "    os.write(2, line + b'\\n')\n"
        "print('kept from Python', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True)
    assert sorted(result.stderr.decode().splitlines()) == [
        "F0000 00:00:1.5 7 x.cc:1] Check failed: fatal lines stay",
        "kept from C++", "kept from Python"]


def test_native_stdout_noise_and_library_deprecations_are_filtered_and_results_pass():
    # The quantizer's line and Keras' numpy notice, as TFLite and Keras 3.15 print them.
    script = (
        "import os, sys, warnings\n"
        "from deeplab_xception.cli.quiet import filter_native_output, quiet_environment\n"
        "quiet_environment()\n"
        "filter_native_output()\n"
        "os.write(1, b'fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
        "output_inference_type: FLOAT32\\n')\n"
        "os.write(1, b'kept from C++\\n')\n"
        "print('kept from Python')\n"
        "for module in ('keras.src.export.tf2onnx_lib', 'deeplab_xception.runtime.export'):\n"
        "    warnings.warn_explicit('In the future `np.object` will be defined', FutureWarning,\n"
        "                           module.replace('.', '/') + '.py', 21, module=module)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True,
                            text=True)
    assert sorted(result.stdout.splitlines()) == ["kept from C++", "kept from Python"]
    assert "tf2onnx_lib" not in result.stderr
    assert "deeplab_xception/runtime/export.py:21: FutureWarning" in result.stderr


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    randomize_weights(model, scale=0.2)
    model.save(root / "deeplab.keras")
    cv2.imwrite(str(root / "photo.png"), np.random.default_rng(0).integers(0, 256, (33, 41, 3),
                                                                              dtype=np.uint8))
    png = (root / "photo.png").read_bytes()
    (root / "bad.png").write_bytes(png[:29] + bytes([png[29] ^ 0xFF]) + png[30:])  # IHDR's CRC
    return root


@pytest.mark.parametrize("verbose", [None, "before", "after"])  # the subcommand
def test_segment_prints_only_its_own_lines_unless_verbose(inputs, tmp_path, verbose):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    command = ENTRY + (["--verbose"] if verbose == "before" else []) + [
        "segment", str(inputs / "photo.png"), str(inputs / "bad.png"),
        "--weights", str(inputs / "deeplab.keras"), "--output-dir", str(tmp_path)] + (
        ["--verbose"] if verbose == "after" else [])
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 1, result.stderr
    own = f"deeplab-xception segment: error: {inputs / 'bad.png'}: not a readable image"
    if verbose:
        assert own in result.stderr
        assert "cpu_feature_guard" in result.stderr or "cudart_stub" in result.stderr
    else:
        assert result.stderr.splitlines() == [own]
    from deeplab_xception.runtime.precision import resolve_precision

    assert result.stdout.splitlines() == [
        f"1 image segmented into {tmp_path} (computed in {resolve_precision('auto')}); 1 failed"]


def test_inference_starts_as_the_model_then_folds_then_freezes_once_each_pays_off():
    import tensorflow as tf

    from deeplab_xception.runtime.compiled import compiled_call

    model = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    randomize_weights(model, scale=0.2)
    images = np.random.default_rng(1).uniform(-1, 1, (1, 33, 41, 3)).astype("float32")
    call = compiled_call(model, fold_after_pixels=33 * 41, freeze_after_pixels=3 * 33 * 41)

    def running_ops():
        graph = (call.frozen.function.graph if call.frozen is not None
                 else call.function.get_concrete_function().graph)
        return collections.Counter(op.type for op in graph.get_operations())

    for folded, frozen in ((False, False), (True, False), (True, False), (True, True)):
        np.testing.assert_allclose(call(images), model(images, training=False), atol=1e-5)
        assert (call.folded is not None) == folded and (call.frozen is not None) == frozen
        ops = running_ops()
        assert (ops["Rsqrt"] == 0) == folded  # a batch norm at inference: 1 / sqrt(var + eps)
        assert (ops["ReadVariableOp"] == 0) == frozen
        # The first stage turns TF's graph optimizer off around its own calls only.
        assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")


def test_help_says_what_each_option_takes(capsys):
    from deeplab_xception.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--tile auto|off|N|H [W ...]", "one value or two: H W (or N for N x N)",
                     "--eval-crop-size H|none [W ...]", "two sizes H W, or none",
                     "--format {ade20k,cityscapes,coco,generic,voc} the dataset's layout",
                     "--split SPLIT the split to evaluate"):
        assert expected in text, expected
