"""The README's first command: the whole pipeline on generated data."""

import json

import cv2
import pytest

from deeplab_xception.cli import main


@pytest.mark.slow
def test_demo_pretrains_finetunes_evaluates_and_draws(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for step in range(1, 7):
        assert f"[{step}/6]" in printed
    assert (out / "pretrain" / "model.keras").is_file()
    report = json.loads((out / "evaluation" / "report.json").read_text())
    # A demo that convinces: every class reaches 0.6, not only the mean.
    assert min(report["per_class_iou"].values()) >= 0.6, report["per_class_iou"]
    overlays = sorted((out / "segmented").glob("*.overlay.png"))
    assert len(overlays) == 4 and all(cv2.imread(str(p)) is not None for p in overlays)
    for name in ("budget.png", "evaluation/confusion_matrix.png"):
        assert cv2.imread(str(out / name)) is not None


def test_demo_rejects_no_workers(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers: must be at least 1" in capsys.readouterr().err


def test_a_second_demo_in_the_same_folder_says_it_resumes_and_fresh_starts_over(
        tmp_path, capsys, monkeypatch):
    from deeplab_xception.cli import demo
    from deeplab_xception.segment import synthetic

    commands = []
    monkeypatch.setattr(demo, "_run", commands.append)
    monkeypatch.setattr(synthetic, "write_synthetic_dataset", lambda root: None)
    out = tmp_path / "demo"
    (out / "pretrain").mkdir(parents=True)
    (out / "pretrain" / "ckpt-40.index").write_bytes(b"earlier")
    (out / "notes.txt").write_text("mine")
    assert main(["demo", "--output-dir", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        f"{out} holds an earlier demo: training resumes from its checkpoints, so finished steps "
        "are not run again (--fresh starts over)\n")
    assert (out / "pretrain" / "ckpt-40.index").read_bytes() == b"earlier" and len(commands) == 5
    assert main(["demo", "--output-dir", str(out), "--fresh"]) == 0
    assert capsys.readouterr().out.startswith(
        f"--fresh: removing the earlier demo's pretrain from {out}\n")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's file stays
    assert main(["demo", "--output-dir", str(out)]) == 0
    assert "earlier demo" not in capsys.readouterr().out
