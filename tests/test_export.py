"""Each export loads in its own runtime and agrees with the Keras model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.export import export, is_previous_export, serving_model
from deeplab_xception.runtime.inference import Segmenter
from helpers import randomize_weights


@pytest.fixture(scope="module")
def model():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    randomize_weights(model, scale=0.2)
    return model


def images(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1, height, width, 3)).astype("uint8")


def check(labels, probabilities, model, x):
    expected = Segmenter(model).probabilities(x)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert (labels == expected.argmax(-1)).mean() > 0.999


def test_exported_graph_has_its_batch_norms_folded(model):
    def batch_norms(m):
        return sum(batch_norms(layer) if isinstance(layer, keras.Model)
                   else isinstance(layer, keras.layers.BatchNormalization) for layer in m.layers)

    assert batch_norms(model) > 0
    assert batch_norms(serving_model(model)) == 0


def test_saved_model_takes_any_image_size(model, tmp_path):
    path = export(model, tmp_path / "segmenter", "saved_model")
    assert is_previous_export(path, "saved_model")  # what --overwrite may replace
    loaded = tf.saved_model.load(path)
    for size in [(65, 65), (49, 71)]:
        x = images(*size)
        out = loaded.serve(tf.constant(x))
        check(out["labels"].numpy(), out["probabilities"].numpy(), model, x)


def test_onnx_runs_in_onnxruntime(model, tmp_path):
    import onnxruntime

    path = export(model, tmp_path / "segmenter.onnx", "onnx")
    session = onnxruntime.InferenceSession(path)
    names = [o.name for o in session.get_outputs()]
    for size in [(65, 65), (37, 53)]:
        x = images(*size, seed=1)
        out = dict(zip(names, session.run(None, {"images": x})))
        check(out["labels"], out["probabilities"], model, x)


def test_tflite_runs_in_the_interpreter(model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = export(model, tmp_path / "segmenter.tflite", "tflite", image_size=(65, 65))
    interpreter = Interpreter(path)
    interpreter.allocate_tensors()
    x = images(65, 65, seed=2)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    labels = next(o for o in outputs if o.ndim == 3)
    probabilities = next(o for o in outputs if o.ndim == 4)
    check(labels, probabilities, model, x)


def test_bad_export_requests_fail_cleanly_and_leave_nothing(model, tmp_path):
    with pytest.raises(UserError, match="--format"):
        export(model, tmp_path / "m.bin", "caffe")
    with pytest.raises(UserError, match="--input-size"):
        export(model, tmp_path / "m.tflite", "tflite")
    assert list(tmp_path.iterdir()) == []
