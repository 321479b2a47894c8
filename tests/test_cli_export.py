"""`deeplab-xception export`: a segmenter that agrees with the model; bad requests fail cleanly."""

import collections
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from deeplab_xception import build_model
from deeplab_xception.runtime import export as export_module
from deeplab_xception.cli import main
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.io import write_image
from deeplab_xception.models import with_output_stride
from helpers import randomize_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    randomize_weights(model, scale=0.2)
    path = tmp_path_factory.mktemp("export") / "deeplab.keras"
    model.save(path)
    return str(path), model


def test_onnx_export_through_the_command_line(weights, tmp_path, capsys):
    import onnxruntime

    path, model = weights
    output = tmp_path / "segmenter.onnx"
    assert main(["export", "--weights", path, "--format", "onnx", "--output", str(output),
                 "--output-stride", "8", "--scales", "0.75", "--flip",
                 "--outputs", "labels,probabilities"]) == 0
    assert capsys.readouterr().out.startswith(
        f"{output}: onnx, uint8 images (any size) -> labels and probabilities (float32); "
        "scales 0.75, flip, tiles above 1025x2049; 3 classes, computed in float32")
    session = onnxruntime.InferenceSession(str(output))
    image = np.random.default_rng(1).integers(0, 256, (41, 57, 3)).astype("uint8")
    labels, probabilities = session.run(["labels", "probabilities"], {"image": image})
    expected = Segmenter(with_output_stride(model, 8), scales=(0.75,), flip=True)
    expected = expected.probabilities(image[None])[0]
    np.testing.assert_allclose(probabilities, expected, atol=5e-3)  # see test_export
    assert (labels == expected.argmax(-1)).mean() >= 0.999

    again = ["export", "--weights", path, "--format", "onnx", "--output", str(output)]
    first = output.read_bytes()
    assert main(again) == 2
    assert "already exists; give --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == first
    assert main(again + ["--overwrite"]) == 0  # now at the model's own output stride, 16
    capsys.readouterr()
    replaced = onnxruntime.InferenceSession(str(output))
    assert [o.name for o in replaced.get_outputs()] == ["labels"]  # the default
    labels, = replaced.run(None, {"image": image})
    assert (labels == Segmenter(model).labels(image[None])[0]).mean() >= 0.999
    assert sorted(os.listdir(tmp_path)) == ["segmenter.onnx"]  # no temporary left


def test_bad_requests_are_errors_and_write_nothing(weights, tmp_path, capsys):
    path, _ = weights
    with pytest.raises(SystemExit) as raised:
        main(["export", "--weights", path, "--format", "caffe", "--output", str(tmp_path / "m")])
    assert raised.value.code == 2
    assert "argument --format: invalid choice: 'caffe'" in capsys.readouterr().err
    assert main(["export", "--weights", path, "--format", "tflite", "--scales", "0.3", "1",
                 "--output", str(tmp_path / "m.tflite")]) == 2
    assert capsys.readouterr().err.strip() == (
        "deeplab-xception export: error: --scales: 0.3: TFLite has no float64 to size a "
        "scaled image as Python does; use scales in steps of 1/128 (e.g. 0.75 1.25) or "
        "another format")
    assert main(["export", "--weights", path, "--format", "onnx", "--tile", "20",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        "deeplab-xception export: error: --tile: 20x20 is smaller than twice the output "
        "stride (32)")
    assert list(tmp_path.iterdir()) == []


def test_int8_tflite_is_calibrated_on_the_given_images(weights, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    path, model = weights
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        write_image(calibration / f"{i}.png", rng.integers(0, 256, (50 + 10 * i, 60, 3), np.uint8))
    output = tmp_path / "segmenter.tflite"
    assert main(["export", "--weights", path, "--format", "tflite", "--output", str(output),
                 "--input-size", "49", "49", "--quantize", "int8", "--outputs",
                 "labels,probabilities",
                 "--calibration-images", str(calibration)]) == 0
    assert capsys.readouterr().out.strip().endswith("; 3 classes, computed in int8")
    interpreter = Interpreter(str(output))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    convs = collections.Counter(
        (op["op_name"], tensors[op["inputs"][0]]["dtype"], tensors[op["inputs"][1]]["dtype"])
        for op in interpreter._get_ops_details() if op["op_name"].endswith("CONV_2D"))
    assert convs == {("CONV_2D", np.int8, np.int8): 37, ("DEPTHWISE_CONV_2D", np.int8, np.int8): 26}
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    image = rng.integers(0, 256, (49, 49, 3)).astype("uint8")
    out = interpreter.get_signature_runner()(image=image)
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"],
                               Segmenter(model).probabilities(image[None])[0], atol=0.03)


@pytest.mark.parametrize("extra,message", [
    (["--format", "onnx", "--quantize", "int8"], "--quantize: int8 is for TFLite only"),
    (["--format", "tflite", "--input-size", "33", "33", "--precision", "bfloat16"],
     "--precision: tflite runtimes have no bfloat16 CPU kernels; bfloat16 is for saved_model"),
    (["--format", "tflite", "--quantize", "int8"],
     "--input-size: int8 quantization calibrates at a fixed input size"),
    (["--format", "tflite", "--quantize", "int8", "--input-size", "33", "33", "--flip"],
     "--quantize: TFLite's int8 calibrator cannot run the loops over scales, flips and tiles"),
    (["--format", "tflite", "--input-size", "33", "33", "--quantize", "int8"],
     "--calibration-images: int8 quantization needs a few images to calibrate on"),
    (["--format", "tflite", "--input-size", "33", "33", "--quantize", "int8",
      "--calibration-images", "EMPTY"], "--calibration-images: EMPTY: directory holds no"),
    (["--format", "saved_model", "--calibration-images", "EMPTY"],
     "--calibration-images: EMPTY: directory holds no"),
])
def test_bad_precision_requests_are_errors_and_write_nothing(weights, tmp_path, capsys, extra,
                                                             message):
    empty = tmp_path / "empty"
    empty.mkdir()
    output = tmp_path / "out" / "m"
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    assert main(["export", "--weights", weights[0], "--output", str(output), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("deeplab-xception export: error: "
                            + message.replace("EMPTY", str(empty))), error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def _tree(path):
    """{relative path: bytes} of every file under `path` (the folder's exact contents)."""
    return {os.path.relpath(os.path.join(folder, name), path):
            open(os.path.join(folder, name), "rb").read()
            for folder, _, names in os.walk(path) for name in names}


def test_existing_outputs_are_refused_and_left_untouched(weights, tmp_path, capsys, monkeypatch):
    path, _ = weights
    models = tmp_path / "models"
    (models / "variables").mkdir(parents=True)
    (models / "saved_model.pb").write_bytes(b"\x08\x01")
    (models / "notes.txt").write_text("mine")
    work = tmp_path / "work"
    work.mkdir()
    (work / "photo.jpg").write_bytes(b"\xff\xd8 a photo")
    monkeypatch.chdir(work)
    before = {p: _tree(p) for p in (models, work)}
    cases = [(str(models), "saved_model", [], "already exists; give --overwrite"),
             (str(models), "saved_model", ["--overwrite"], "is not a previous saved_model export"),
             (".", "saved_model", ["--overwrite"], "is the working, home or root folder"),
             ("..", "onnx", ["--overwrite"], "is the working, home or root folder"),
             ("photo.jpg", "onnx", ["--overwrite"], "is not a previous onnx export"),
             (".", "onnx", [], "already exists")]
    for output, fmt, extra, message in cases:
        assert main(["export", "--weights", path, "--format", fmt, "--output", output, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (output, extra, err)
    assert {p: _tree(p) for p in (models, work)} == before
    assert sorted(os.listdir(tmp_path)) == ["models", "work"]


def test_a_missing_exporter_names_the_extra(weights, tmp_path, capsys, monkeypatch):
    import importlib.util

    path, _ = weights
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    assert main(["export", "--weights", path, "--format", "onnx",
                 "--output", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.strip() == (
        "deeplab-xception export: error: --format onnx: needs tf2onnx; "
        "install them with: pip install 'deeplab-xception[export]'")
    assert list(tmp_path.iterdir()) == []


def _fake_saved_model(path, tag):
    """The files a SavedModel export writes, holding `tag`: a previous export, seconds to make."""
    (path / "variables").mkdir(parents=True)
    (path / "assets").mkdir()
    for name in ("saved_model.pb", "fingerprint.pb", "variables/variables.index",
                 "variables/variables.data-00000-of-00001"):
        (path / name).write_bytes(b"\x08" + tag)


@pytest.fixture
def fake_serving(monkeypatch):
    """`export` writes a fake SavedModel holding b"new" instead of tracing a model."""
    monkeypatch.setattr(export_module, "_segmenter_module", lambda *a, **k: None)
    monkeypatch.setattr(export_module, "_write",
                        lambda module, fmt, written, *a: _fake_saved_model(pathlib.Path(written),
                                                                           b"new"))


@pytest.mark.parametrize("mine", ["variables/b/thesis.txt", "assets/notes.txt",
                                  "variables/notes.txt", "assets/x/y.txt"])
def test_overwrite_refuses_a_previous_export_holding_user_files_at_any_depth(
        weights, tmp_path, capsys, mine):
    target = tmp_path / "sm"
    _fake_saved_model(target, b"old")
    export_module.check_target(str(target), "saved_model", overwrite=True)  # a previous export
    (target / mine).parent.mkdir(exist_ok=True)
    (target / mine).write_text("mine")
    before = _tree(target)
    assert main(["export", "--weights", weights[0], "--format", "saved_model",
                 "--output", str(target), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"deeplab-xception export: error: --output: {target} is not a previous "
                   "saved_model export; --overwrite replaces nothing else")
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["sm"]


def test_overwrite_through_a_trailing_slash_names_the_folder_or_link_itself(
        weights, tmp_path, capsys, fake_serving):
    target = tmp_path / "sm"
    _fake_saved_model(target, b"old")
    export_module.export(None, str(target) + os.sep, "saved_model",
                         export_module.ExportOptions("saved_model"), overwrite=True)
    assert set(_tree(target).values()) == {b"\x08new"}
    link = tmp_path / "link"
    link.symlink_to(target)
    before = _tree(target)
    assert main(["export", "--weights", weights[0], "--format", "saved_model",
                 "--output", f"{link}/", "--overwrite"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{link} is not a previous saved_model "
                                                    "export; --overwrite replaces nothing else")
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["link", "sm"]


def test_ctrl_c_between_the_renames_of_an_overwrite_keeps_the_previous_export(
        tmp_path, monkeypatch, fake_serving):
    target = tmp_path / "sm"
    _fake_saved_model(target, b"old")
    before = _tree(target)
    real, calls = os.replace, []

    def interrupted_replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new export's rename into place
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        export_module.export(None, target, "saved_model",
                             export_module.ExportOptions("saved_model"), overwrite=True)
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["sm"]


KILLED_EXPORT = """
import os, pathlib, signal, sys
from deeplab_xception.runtime import export
calls, real = [], os.replace
def replace(src, dst):
    calls.append(dst)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
def write(module, fmt, path, *_):
    os.makedirs(path)
    (pathlib.Path(path) / "saved_model.pb").write_bytes(b"new")
os.replace = replace
export._segmenter_module = lambda *a, **k: None
export._write = write
export.export(None, sys.argv[1], "saved_model", export.ExportOptions("saved_model"),
              overwrite=True)
"""


def test_a_kill_between_the_renames_is_put_back_by_the_next_run(tmp_path, capsys):
    target = tmp_path / "sm"
    _fake_saved_model(target, b"old")
    before = _tree(target)
    killed = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(target)],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not target.exists()  # the previous export waits in the staging folder
    export_module.check_target(str(target), "saved_model", overwrite=True)
    err = capsys.readouterr().err
    assert err.startswith(f"{target}: put back the previous export that an interrupted "
                          "overwrite left in ") and err.count("\n") == 1
    assert _tree(target) == before and sorted(os.listdir(tmp_path)) == ["sm"]


def test_the_library_names_arguments_where_the_command_line_names_flags(tmp_path):
    taken = tmp_path / "m.onnx"
    taken.write_bytes(b"mine")
    with pytest.raises(ValueError) as error:
        export_module.check_target(str(taken), "onnx", overwrite=False)
    assert str(error.value) == (f"output: {taken} already exists; give overwrite to replace "
                                "a previous onnx export")
    with pytest.raises(ValueError) as error:
        export_module.check_target(str(taken), "onnx", overwrite=True)
    assert str(error.value) == (f"output: {taken} is not a previous onnx export; overwrite "
                                "replaces nothing else")
    assert taken.read_bytes() == b"mine"
