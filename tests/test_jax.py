"""Inference on the JAX backend: the same outputs as TensorFlow's, without importing it.

The commands run under JAX in one subprocess (the tests run on TensorFlow); their
reference is the same command run here, on TensorFlow.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from deeplab_xception import build_model
from deeplab_xception.backend import COMPILATION_CACHE_VARIABLE, compilation_cache_dir
from deeplab_xception.cli import main
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.tiling import Tiling
from deeplab_xception.weights import checkpoint
from helpers import randomize_weights
from deeplab_xception.segment.synthetic import CLASSES, write_synthetic_dataset

# Runs each argv (a JSON list) through the CLI; prints per run its exit status, output,
# whether TensorFlow was imported by then, and the (shape, precision) of every program
# that the JAX inference functions compiled.
DRIVER = r"""
import contextlib, io, json, sys
from deeplab_xception.runtime import segmenter
from deeplab_xception.cli import main

functions = []
compiled_call = segmenter.compiled_call

def recording(*args, **kwargs):
    functions.append(compiled_call(*args, **kwargs))
    return functions[-1]

segmenter.compiled_call = recording
results = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    results.append({"code": code, "stdout": out.getvalue(), "tensorflow": "tensorflow" in sys.modules,
                    "programs": [[[list(shape), precision] for shape, precision in f.programs]
                                 for f in functions]})
    functions.clear()
print(json.dumps(results))
"""

WHOLE, TILED = (45, 61), (65, 81)
TILE = (33, 33)  # 3 x 4 tiles of one size
SCALES = ("0.75", "1.25")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("jax")
    deeplab = build_model("deeplab", backbone="xception_tiny", num_classes=len(CLASSES))
    rng = np.random.default_rng(0)
    for w in deeplab.weights:  # zero offsets, so the classes follow the image
        if w.path.endswith(("moving_variance", "gamma")):
            w.assign(np.ones(w.shape, "float32"))
        elif w.path.endswith(("moving_mean", "beta", "bias")):
            w.assign(np.zeros(w.shape, "float32"))
        else:
            w.assign(rng.normal(0.0, 0.3, w.shape).astype("float32"))
    deeplab.save(root / "deeplab.keras")
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=6)
    randomize_weights(classifier, seed=1, scale=0.2)
    classifier.save(root / "classifier.keras")
    for name, photo, (height, width) in (("whole.png", skimage.data.astronaut(), WHOLE),
                                         ("tiled.png", skimage.data.astronaut()[::-1], TILED)):
        cv2.imwrite(str(root / name), cv2.cvtColor(cv2.resize(photo, (width, height)),
                                                   cv2.COLOR_RGB2BGR))
    data = write_synthetic_dataset(str(root / "shapes"), num_train=1, num_val=3, size=41, seed=3)
    return dict(root=root, data=data, deeplab=str(root / "deeplab.keras"),
                classifier=str(root / "classifier.keras"))


def commands(files, out):
    """{name: argv}: the commands run on both backends, writing under `out`."""
    segment = ["segment", "--weights", files["deeplab"], "--precision", "float32",
               "--save-probabilities"]
    root = files["root"]
    return {
        "whole": segment + [str(root / "whole.png"), "--output-dir", f"{out}/whole"],
        "tiled": segment + [str(root / "tiled.png"), "--output-dir", f"{out}/tiled",
                            "--tile", *map(str, TILE)],
        "scales": segment + [str(root / "whole.png"), "--output-dir", f"{out}/scales",
                             "--scales", *SCALES, "--flip"],
        "classify": ["classify", str(root / "whole.png"), str(root / "tiled.png"), "--weights",
                     files["classifier"], "--top-k", "6", "--format", "json"],
        "budget": ["budget", "--backbone", "xception_tiny", "--num-classes", "4", "--input-size",
                   "41", "49", "--output-stride", "16", "--measure", "2", "--precision",
                   "float32", "--format", "json"],
        "evaluate": ["evaluate", "--weights", files["deeplab"], "--data", files["data"],
                     "--split", "val", "--output-dir", f"{out}/evaluate"],
    }


@pytest.fixture(scope="module")
def runs(files):
    """{command: (result on JAX, stdout on TensorFlow)}; the JAX run keeps its compiled
    programs in its own cache folder, every program cached (none is too quick)."""
    jax_commands = commands(files, files["root"] / "jax")
    env = dict(os.environ, KERAS_BACKEND="jax", DEEPLAB_XCEPTION_CACHE=str(files["root"] / "cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop(COMPILATION_CACHE_VARIABLE, None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(jax_commands.values()))],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    on_jax = dict(zip(jax_commands, json.loads(result.stdout.splitlines()[-1])))
    on_tensorflow = {}
    for name, argv in commands(files, files["root"] / "tensorflow").items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 0
        on_tensorflow[name] = out.getvalue()
    return {name: (on_jax[name], on_tensorflow[name]) for name in jax_commands}


@pytest.mark.parametrize("name", ["whole", "tiled", "scales"])
def test_segment_on_jax_writes_what_tensorflow_writes_without_importing_it(files, runs, name):
    on_jax, _ = runs[name]
    assert on_jax["code"] == 0 and not on_jax["tensorflow"]
    assert "(computed in float32)" in on_jax["stdout"]
    stem = "tiled" if name == "tiled" else "whole"
    outputs = {}
    for backend in ("jax", "tensorflow"):
        folder = files["root"] / backend / name
        outputs[backend] = (np.array(Image.open(folder / f"{stem}.png")), np.load(folder / f"{stem}.npy"))
    (labels, probabilities), (expected_labels, expected) = outputs["jax"], outputs["tensorflow"]
    assert labels.shape == (TILED if name == "tiled" else WHOLE)
    assert np.mean(labels == expected_labels) >= 0.999
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    assert np.count_nonzero(np.bincount(expected_labels.ravel())) > 1  # not a constant answer


def test_jax_compiles_once_per_input_shape(runs):
    """Tiles reuse one program per tile size; each scale and its flip share one."""
    rows, columns = Tiling(TILE, align=16).spans(*TILED)
    assert (len(rows), len(columns)) == (3, 4)
    [programs] = runs["tiled"][0]["programs"]
    assert programs == [[[1, *TILE, 3], "float32"]]
    [programs] = runs["scales"][0]["programs"]
    assert len(programs) == len(SCALES) and {p for _, p in programs} == {"float32"}
    [programs] = runs["whole"][0]["programs"]
    assert programs == [[[1, *WHOLE, 3], "float32"]]


def test_classify_and_budget_on_jax_match_tensorflow_without_importing_it(runs):
    on_jax, on_tensorflow = runs["classify"]
    assert on_jax["code"] == 0 and not on_jax["tensorflow"]
    ours, theirs = json.loads(on_jax["stdout"]), json.loads(on_tensorflow)
    assert [r["image"] for r in ours] == [r["image"] for r in theirs]
    for mine, reference in zip(ours, theirs):
        expected = {e["class"]: e["probability"] for e in reference["top_k"]}
        assert len(mine["top_k"]) == 6
        for entry in mine["top_k"]:
            assert entry["probability"] == pytest.approx(expected[entry["class"]], abs=1e-4)

    on_jax, on_tensorflow = runs["budget"]
    assert on_jax["code"] == 0 and not on_jax["tensorflow"]
    [row], [reference] = json.loads(on_jax["stdout"]), json.loads(on_tensorflow)
    assert row["seconds"] > 0 and row["precision"] == "float32"
    timing = ("seconds", "images_per_second")
    assert ({k: v for k, v in row.items() if k not in timing}
            == {k: v for k, v in reference.items() if k not in timing})


def test_evaluate_on_jax_reports_the_tensorflow_confusion_matrix(files, runs):
    on_jax, _ = runs["evaluate"]
    assert on_jax["code"] == 0  # tf.data reads the images: TensorFlow is imported here
    reports = [json.loads((files["root"] / backend / "evaluate" / "report.json").read_text())
               for backend in ("jax", "tensorflow")]
    ours, reference = (np.array(r["confusion_matrix"]) for r in reports)
    assert ours.sum() == reference.sum() == 3 * 41 * 41
    assert np.abs(ours - reference).sum() <= 2 * 0.001 * ours.sum()  # 0.1% of pixels may move
    assert reports[0]["mean_iou"] == pytest.approx(reports[1]["mean_iou"], abs=0.01)


def test_compiled_programs_are_kept_in_the_package_cache(files, runs):
    cached = os.listdir(files["root"] / "cache" / "jax_compilation_cache")
    assert len(cached) >= 3, cached  # at least the whole image's, a tile's and a classifier's


def test_the_compilation_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPLAB_XCEPTION_CACHE", str(tmp_path))
    monkeypatch.delenv(COMPILATION_CACHE_VARIABLE, raising=False)
    assert compilation_cache_dir() == str(tmp_path / "jax_compilation_cache")
    monkeypatch.setenv(COMPILATION_CACHE_VARIABLE, str(tmp_path / "elsewhere"))
    assert compilation_cache_dir() == str(tmp_path / "elsewhere")
    monkeypatch.setenv(COMPILATION_CACHE_VARIABLE, "off")
    assert compilation_cache_dir() is None


def test_a_tf_checkpoint_without_tensorflow_asks_for_a_conversion(monkeypatch, tmp_path):
    prefix = tmp_path / "model.ckpt"
    (tmp_path / "model.ckpt.index").write_bytes(b"")

    def missing():
        raise ImportError("No module named 'tensorflow'")

    monkeypatch.setattr(checkpoint, "import_tensorflow", missing)
    with pytest.raises(UserError, match=rf"^{prefix}: reading an official TF checkpoint needs "
                                        r"TensorFlow, which is not installed; convert it once"):
        checkpoint.OfficialCheckpoint(str(prefix))


def test_backend_option_cannot_switch_a_running_keras(capsys):
    assert main(["--backend", "jax", "configs"]) == 2
    assert capsys.readouterr().err.strip() == (
        "deeplab-xception configs: error: --backend jax: Keras already runs on tensorflow")
