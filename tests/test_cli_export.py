"""`deeplab-xception export`: a segmenter that agrees with the model; bad requests fail cleanly."""

import os

import numpy as np
import pytest

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.inference import Segmenter
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
                 "--output-stride", "8"]) == 0
    assert capsys.readouterr().out.startswith(f"{output}: onnx, uint8 images (any size)")
    session = onnxruntime.InferenceSession(str(output))
    names = [o.name for o in session.get_outputs()]
    image = np.random.default_rng(1).integers(0, 256, (1, 41, 57, 3)).astype("uint8")
    result = dict(zip(names, session.run(None, {"images": image})))
    expected = Segmenter(with_output_stride(model, 8)).probabilities(image)
    np.testing.assert_allclose(result["probabilities"], expected, atol=1e-4)
    assert result["labels"].shape == (1, 41, 57)

    again = ["export", "--weights", path, "--format", "onnx", "--output", str(output)]
    first = output.read_bytes()
    assert main(again) == 2
    assert "already exists; give --overwrite" in capsys.readouterr().err
    assert output.read_bytes() == first
    assert main(again + ["--overwrite"]) == 0  # now at the model's own output stride, 16
    capsys.readouterr()
    replaced = onnxruntime.InferenceSession(str(output)).run(None, {"images": image})
    np.testing.assert_allclose(dict(zip(names, replaced))["probabilities"],
                               Segmenter(model).probabilities(image), atol=1e-4)
    assert sorted(os.listdir(tmp_path)) == ["segmenter.onnx"]  # no temporary left


def test_bad_requests_are_errors_and_write_nothing(weights, tmp_path, capsys):
    path, _ = weights
    with pytest.raises(SystemExit) as raised:
        main(["export", "--weights", path, "--format", "caffe", "--output", str(tmp_path / "m")])
    assert raised.value.code == 2
    assert "argument --format: invalid choice: 'caffe'" in capsys.readouterr().err
    assert main(["export", "--weights", path, "--format", "tflite",
                 "--output", str(tmp_path / "m.tflite")]) == 2
    assert capsys.readouterr().err.strip() == (
        "deeplab-xception export: error: --input-size: TFLite needs a fixed input size, "
        "e.g. --input-size 513 513")
    assert list(tmp_path.iterdir()) == []


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
