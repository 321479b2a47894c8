"""Each export holds `segment`'s whole procedure and returns its labels in its own runtime.

The reference is `Segmenter`, whose tiles, scales, flips and resizes are numpy;
the exported files run the same procedure as TensorFlow graph ops.
"""

import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.errors import ArgumentError
from deeplab_xception.runtime.export import ExportOptions, export, is_previous_export
from deeplab_xception.runtime.compiled import InferenceFunction
from deeplab_xception.runtime.folding import fold_batch_norms
from deeplab_xception.runtime.segmenter import Segmenter
from helpers import randomize_weights

# Smaller than a tile, 3 x 4 tiles of 64 (stride 32), odd-sized: 2 x 2 tiles at scale 1.
SIZES = [(40, 50), (100, 150), (77, 93)]
TILE = (64, 64)
MULTI_SCALE = dict(scales=(0.75, 1.25), flip=True)


@pytest.fixture(scope="module")
def model():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4)
    randomize_weights(model, scale=0.2)
    return model


@pytest.fixture(scope="module")
def references(model):
    """{(procedure, size): (image, probabilities)} from `Segmenter` running the folded network
    the export holds (as `segment` does past its first megapixels)."""
    folded = fold_batch_norms(keras.Model(model.input, model.get_layer(model.LOGITS).output))
    found = {}
    for name, procedure in {"single": {}, "multi": MULTI_SCALE}.items():
        segmenter = Segmenter(model, tile=TILE, **procedure)
        segmenter.logits_model = InferenceFunction(folded, folded=True)
        for i, size in enumerate(SIZES):
            image = np.random.default_rng(i).integers(0, 256, (*size, 3)).astype("uint8")
            found[name, size] = image, segmenter.probabilities(image[None])[0]
    return found


def check(labels, probabilities, expected, exact):
    assert labels.dtype == np.uint8 and labels.shape == expected.shape[:2]
    if exact:
        np.testing.assert_array_equal(labels, expected.argmax(-1))
    assert (labels == expected.argmax(-1)).mean() >= 0.999
    if probabilities is not None:
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def options(fmt, procedure, outputs=("labels", "probabilities")):
    return ExportOptions(fmt, tile=TILE, outputs=outputs,
                         **(MULTI_SCALE if procedure == "multi" else {}))


@pytest.fixture(scope="module")
def saved_models(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_models")
    return {"single": export(model, folder / "single", "saved_model",
                             options("saved_model", "single")),
            "multi": export(model, folder / "multi", "saved_model",
                            options("saved_model", "multi", outputs=("labels",)))}


def test_saved_model_serves_encoded_images_and_tensors_with_segments_labels(
        saved_models, references):
    assert is_previous_export(saved_models["single"], "saved_model")  # what --overwrite replaces
    for procedure, path in saved_models.items():
        loaded = tf.saved_model.load(path)
        serve, tensors = loaded.signatures["serving_default"], loaded.signatures["segment_images"]
        assert list(serve.structured_input_signature[1]) == ["image_bytes"]
        for size in SIZES:
            image, expected = references[procedure, size]
            out = tensors(images=tf.constant(image[None]))
            assert sorted(out) == (["labels", "probabilities"] if procedure == "single"
                                   else ["labels"])
            probabilities = out["probabilities"].numpy()[0] if "probabilities" in out else None
            check(out["labels"].numpy()[0], probabilities, expected, exact=True)
            png = cv2.imencode(".png", image[..., ::-1])[1].tobytes()  # what a client posts
            served = serve(image_bytes=tf.constant([png, png]))["labels"].numpy()
            np.testing.assert_array_equal(served, np.stack([out["labels"].numpy()[0]] * 2))
    # JPEG: decoded inside by TF's decoder, which may differ from OpenCV's by a unit here
    # and there; the labels are those of the pixels it decoded.
    image, _ = references["single", SIZES[2]]
    jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    decoded = tf.io.decode_image(jpeg, channels=3).numpy()
    loaded = tf.saved_model.load(saved_models["single"])
    expected = loaded.signatures["segment_images"](images=tf.constant(decoded[None]))["labels"]
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg]))["labels"]
    np.testing.assert_array_equal(served.numpy(), expected.numpy())


def test_saved_model_stores_each_weight_once(model, saved_models):
    variables = os.path.join(saved_models["multi"], "variables")
    stored = sum(os.path.getsize(os.path.join(variables, name)) for name in os.listdir(variables))
    weights = sum(w.numpy().nbytes for w in fold_batch_norms(model).weights)
    assert weights < stored < 1.1 * weights + 100_000


def test_onnx_runs_the_procedure_in_onnxruntime(model, references, tmp_path):
    import onnxruntime

    path = export(model, tmp_path / "segmenter.onnx", "onnx", options("onnx", "multi"))
    session = onnxruntime.InferenceSession(path)
    assert [i.name for i in session.get_inputs()] == ["image"]
    names = [o.name for o in session.get_outputs()]
    assert names == ["labels", "probabilities"]
    for size in SIZES:
        image, expected = references["multi", size]
        labels, probabilities = session.run(None, {"image": image})
        check(labels, None, expected, exact=False)
        # onnxruntime's network differs from TensorFlow's by up to 2e-3 in probability at
        # the image's corners (odd sizes), whatever the procedure: the argmax holds.
        np.testing.assert_allclose(probabilities, expected, atol=5e-3)


def test_tflite_runs_the_procedure_at_any_size_in_litert(model, references, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    path = export(model, tmp_path / "segmenter.tflite", "tflite", options("tflite", "multi"))
    runner = Interpreter(path).get_signature_runner()
    for size in SIZES:
        image, expected = references["multi", size]
        out = runner(image=image)
        assert sorted(out) == ["labels", "probabilities"]
        check(out["labels"], out["probabilities"], expected, exact=False)


@pytest.mark.parametrize("fmt,arguments,argument", [
    ("caffe", {}, "format"),
    ("onnx", {"scales": (0.0,)}, "scales"),
    ("tflite", {"scales": (0.3,)}, "scales"),  # sized in float64 by Python, no float64 in TFLite
    ("onnx", {"outputs": ("probabilities",)}, "outputs"),
    ("onnx", {"probabilities_dtype": "float16"}, "probabilities_dtype"),
    ("onnx", {"tile": (16, 16)}, "tile"),
    ("onnx", {"overlap": 1.0}, "overlap"),
])
def test_procedures_an_export_cannot_hold_are_refused(fmt, arguments, argument):
    with pytest.raises(ArgumentError, match=f"^{argument}: "):
        ExportOptions(fmt, **arguments)


def test_bad_export_requests_fail_cleanly_and_leave_nothing(model, tmp_path):
    with pytest.raises(ArgumentError, match="^precision: onnx runtimes have no bfloat16"):
        export(model, tmp_path / "m.onnx", "onnx", precision="bfloat16")
    with pytest.raises(ArgumentError, match="^image_size: int8"):
        export(model, tmp_path / "m.tflite", "tflite", quantize="int8")
    assert list(tmp_path.iterdir()) == []
