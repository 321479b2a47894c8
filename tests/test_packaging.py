"""What an installed wheel needs: deeplab_xception alone at its top, the configs inside it and
found by name from any folder (a real path first), listed by `deeplab-xception configs`;
optional parts that name their extra."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.config import find_config, load_config
from deeplab_xception.errors import UserError
from deeplab_xception.segment.config import SegmentConfig

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
# The folder the wheel ships, read directly rather than through importlib.resources.
SHIPPED = REPOSITORY / "configs"


def test_the_wheel_holds_deeplab_xception_alone_with_the_applications_and_configs_inside(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build writes nothing into the clone
    for name in ("deeplab_xception", "pretrain", "segment", "configs"):
        shutil.copytree(REPOSITORY / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPOSITORY / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True)
    [wheel] = (tmp_path / "dist").glob("deeplab_xception-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"deeplab_xception", wheel.name.split("-py")[0] + ".dist-info"}
    for application in ("pretrain", "segment"):
        modules = {p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / application).rglob("*.py")}
        assert {f"deeplab_xception/{module}" for module in modules} <= names
    configs = {f"deeplab_xception/configs/{p.name}" for p in SHIPPED.glob("*.yaml")}
    assert {"deeplab_xception/configs/segment_tiny.yaml", "deeplab_xception/configs/pretrain_tiny.yaml"} <= configs
    assert configs <= names


@pytest.mark.parametrize("spelling", ["segment_voc.yaml", "configs/segment_voc.yaml",
                                      "./configs/segment_voc.yaml"])
def test_shipped_config_is_found_by_name_from_any_folder(spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(spelling).read_text() == (SHIPPED / "segment_voc.yaml").read_text()
    assert load_config(SegmentConfig, spelling).data.crop_size == (513, 513)


def test_a_real_path_wins_over_the_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "segment_voc.yaml").write_text("data:\n  crop_size: [65, 97]\n")
    assert load_config(SegmentConfig, "configs/segment_voc.yaml").data.crop_size == (65, 97)


def test_unknown_config_names_the_file_and_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"segment_vco.yaml: no such config file.*segment_voc.yaml"):
        load_config(SegmentConfig, "segment_vco.yaml")
    with pytest.raises(UserError, match="no such config file"):
        load_config(SegmentConfig, "elsewhere/segment_voc.yaml")  # only configs/ means shipped


def test_configs_command_lists_and_prints_the_shipped_configs(capsys):
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(p.name for p in SHIPPED.glob("*.yaml"))
    assert all(line.endswith(".") for line in lines)  # whole sentences, never cut mid-way
    tiny = next(line for line in lines if line.startswith("pretrain_tiny.yaml"))
    assert tiny.split(None, 1)[1] == (
        "The smoke-test variant: xception_tiny on a generated, learnable set of four colored "
        "shapes (written at data.train's folder on first use), 64x64 images.")
    assert main(["configs", "segment_tiny.yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(
        (SHIPPED / "segment_tiny.yaml").read_text())
    assert main(["configs", "nope.yaml"]) == 2
    assert "nope.yaml: no such config file" in capsys.readouterr().err


def test_a_missing_optional_dependency_names_its_extra(tmp_path, monkeypatch, capsys):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=3)
    model.save(tmp_path / "model.keras")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    argv = ["export", "--weights", str(tmp_path / "model.keras"), "--format", "onnx",
            "--output", str(tmp_path / "model.onnx")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "needs tf2onnx; install them with: pip install 'deeplab-xception[export]'" in error
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]


def test_configs_into_a_closed_pipe_ends_quietly():
    """`deeplab-xception configs | head -1`: the reader is gone before the output is."""
    process = subprocess.Popen([sys.executable, "-c", "from deeplab_xception.cli import "
                                "entry_point; entry_point()", "configs"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert err == b"" and process.returncode == 141
