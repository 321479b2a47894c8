"""`deeplab-xception export`: a segmenter that agrees with the model; bad requests fail cleanly."""

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
