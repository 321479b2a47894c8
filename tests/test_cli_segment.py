"""`deeplab-xception segment` on photographs of every format: outputs, bad inputs, tracing."""

import json
import os

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.runtime.image_files import class_table, read_batches
from deeplab_xception.runtime.compiled import compiled_call
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.io import read_image
from deeplab_xception.runtime.visualize import MIN_DISPLAY_SIZE, blend, enlarge_for_display, overlay
from deeplab_xception.segment.datasets import cityscapes, voc
from deeplab_xception.data.classes import bit_palette

EXIF_ORIENTATION = 0x0112


def _bgr(rgb):
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _photos(folder):
    """Five photographs, each of another size, in five encodings; {file name: RGB as read}."""
    folder.mkdir()
    astronaut = cv2.resize(skimage.data.astronaut(), (72, 64), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "astronaut.jpg"), _bgr(astronaut))
    cv2.imwrite(str(folder / "camera.png"), cv2.resize(skimage.data.camera(), (50, 61)))
    coffee = cv2.resize(skimage.data.coffee(), (88, 56)).astype(np.uint16) * 257
    cv2.imwrite(str(folder / "coffee.png"), _bgr(coffee))
    chelsea = cv2.resize(skimage.data.chelsea(), (60, 45))
    alpha = np.full(chelsea.shape[:2] + (1,), 200, np.uint8)
    cv2.imwrite(str(folder / "chelsea.png"), cv2.cvtColor(np.concatenate([chelsea, alpha], -1),
                                                          cv2.COLOR_RGBA2BGRA))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown rotated a quarter turn clockwise
    Image.fromarray(cv2.resize(skimage.data.astronaut(), (64, 40))).save(
        folder / "rotated.jpg", exif=exif)
    assert cv2.imread(str(folder / "coffee.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert cv2.imread(str(folder / "chelsea.png"), cv2.IMREAD_UNCHANGED).shape == (45, 60, 4)
    assert cv2.imread(str(folder / "camera.png"), cv2.IMREAD_UNCHANGED).shape == (61, 50)
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("segment")
    model = build_model("deeplab", backbone="xception_tiny", num_classes=21)
    rng = np.random.default_rng(0)
    for w in model.weights:  # zero offsets, so the classes follow the image
        if w.path.endswith(("moving_variance", "gamma")):
            w.assign(np.ones(w.shape, "float32"))
        elif w.path.endswith(("moving_mean", "beta", "bias")):
            w.assign(np.zeros(w.shape, "float32"))
        else:
            w.assign(rng.normal(0.0, 0.3, w.shape).astype("float32"))
    model.save(root / "voc.keras")
    names = _photos(root / "photos")
    return dict(root=root, model=model, weights=str(root / "voc.keras"), photos=root / "photos",
                names=names)


def _stderr_lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_every_format_gives_labels_overlay_and_json_in_one_trace(files, tmp_path, monkeypatch):
    traced = []

    def recording(model, precision, **options):
        traced.append(compiled(model, precision, **options))
        return traced[-1]

    compiled = compiled_call
    monkeypatch.setattr("deeplab_xception.runtime.segmenter.compiled_call", recording)
    out = tmp_path / "out"
    assert main(["segment", str(files["photos"]), "--weights", files["weights"],
                 "--output-dir", str(out), "--overlay", "--json", "--alpha", "0.4"]) == 0
    assert len(traced) == 1 and traced[0].input_shape == (None, None, None, 3)
    assert sorted(os.listdir(out)) == sorted(
        f"{os.path.splitext(n)[0]}{suffix}" for n in files["names"]
        for suffix in (".png", ".overlay.png", ".json"))

    segmenter = Segmenter(files["model"], precision="auto")  # what segment runs by default
    classes_seen = set()
    for name in files["names"]:
        image = read_image(files["photos"] / name)
        stem = out / os.path.splitext(name)[0]
        expected = segmenter.labels(image[None])[0]
        with Image.open(f"{stem}.png") as png:
            assert png.mode == "P"
            np.testing.assert_array_equal(np.array(png), expected)
            palette = np.array(png.getpalette()[:3 * 21], np.uint8).reshape(21, 3)
        np.testing.assert_array_equal(palette, voc.PALETTE)

        report = json.loads(stem.with_suffix(".json").read_text())
        assert report["image"] == str(files["photos"] / name)
        assert (report["height"], report["width"]) == image.shape[:2]
        counts = np.bincount(expected.ravel(), minlength=21) / expected.size
        fractions = [c["fraction"] for c in report["classes"]]
        assert sum(fractions) == pytest.approx(1.0, abs=1e-9)
        assert fractions == sorted(fractions, reverse=True)
        for entry in report["classes"]:
            assert entry["name"] == voc.CLASSES[entry["index"]]
            assert entry["fraction"] == pytest.approx(counts[entry["index"]])
        assert len(report["classes"]) == np.count_nonzero(counts)
        classes_seen.update(c["index"] for c in report["classes"])

        drawn = cv2.cvtColor(cv2.imread(f"{stem}.overlay.png"), cv2.COLOR_BGR2RGB)
        shown = enlarge_for_display(blend(image, expected, voc.PALETTE, 0.4))
        assert max(shown.shape[:2]) >= MIN_DISPLAY_SIZE > max(image.shape[:2])
        legend = _legend_box(drawn, shown)
        for entry in report["classes"]:  # a swatch per class present
            assert (legend.reshape(-1, 3) == voc.PALETTE[entry["index"]]).all(axis=1).any()
    assert len(classes_seen) > 1
    with Image.open(out / "rotated.png") as png:  # EXIF orientation applied: 64 wide stored
        assert png.size == (40, 64)
    with Image.open(out / "coffee.png") as png:  # 16-bit input
        assert png.size == (88, 56)


def _legend_box(drawn, shown):
    """The legend drawn over `shown`: same size, and it differs only in a box at the top left."""
    assert drawn.shape == shown.shape  # the legend never widens the image
    rows, cols = np.nonzero((drawn != shown).any(axis=-1))
    assert rows.min() < 5 and cols.min() < 5
    bottom, right = rows.max() + 1, cols.max() + 1
    np.testing.assert_array_equal(drawn[bottom:], shown[bottom:])
    np.testing.assert_array_equal(drawn[:, right:], shown[:, right:])
    return drawn[:bottom, :right]


def test_the_legend_scales_with_the_image_and_can_be_left_out(files, tmp_path):
    labels = np.zeros((1200, 1600), np.uint8)
    labels[600:] = 15  # person
    photo = np.full((1200, 1600, 3), 90, np.uint8)
    drawn = overlay(photo, labels, voc.PALETTE, voc.CLASSES)
    height, width = _legend_box(drawn, blend(photo, labels, voc.PALETTE, 0.5)).shape[:2]
    assert 2 * 1600 // 40 <= height < 1200 // 4 and width < 1600 // 2  # two rows of 40 px
    small = overlay(photo[:40, :50], labels[:40, :50], voc.PALETTE, voc.CLASSES)
    assert small.shape[:2] == enlarge_for_display(photo[:40, :50]).shape[:2]
    out = tmp_path / "out"
    assert main(["segment", str(files["photos"] / "camera.png"), "--weights", files["weights"],
                 "--output-dir", str(out), "--overlay", "--no-legend"]) == 0
    image = read_image(files["photos"] / "camera.png")
    with Image.open(out / "camera.png") as png:
        expected = enlarge_for_display(blend(image, np.array(png), voc.PALETTE, 0.5))
    np.testing.assert_array_equal(
        cv2.cvtColor(cv2.imread(str(out / "camera.overlay.png")), cv2.COLOR_BGR2RGB), expected)


def test_bad_files_are_named_and_skipped_and_good_ones_still_written(files, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = files["photos"] / "astronaut.jpg"
    jpeg = good.read_bytes()
    (mixed / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (mixed / "notes.png").write_text("not an image")
    (mixed / "empty.jpg").write_bytes(b"")
    (mixed / "readme.txt").write_text("not taken from a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = ["segment", str(mixed), str(good), str(empty), str(tmp_path / "none*.jpg"),
            str(tmp_path / "missing.png"), "--weights", files["weights"], "--output-dir", str(out),
            "--json"]
    assert main(argv) == 1
    prefix = "deeplab-xception segment: error: "
    assert _stderr_lines(capsys) == [
        prefix + f"{empty}: directory holds no .bmp/.jp2/.jpeg/.jpg/.pbm/.pgm/.png/.pnm/.ppm/"
                 ".tif/.tiff/.webp files",
        prefix + f"{tmp_path / 'none*.jpg'}: no image file matches",
        prefix + f"{tmp_path / 'missing.png'}: no such file",
        prefix + f"{mixed / 'empty.jpg'}: not a readable image",
        prefix + f"{mixed / 'notes.png'}: not a readable image",
        prefix + f"{mixed / 'truncated.jpg'}: not a readable image",
    ]
    assert sorted(os.listdir(out)) == ["astronaut.json", "astronaut.png"]

    written = (out / "astronaut.png").read_bytes()
    assert main(["segment", str(mixed / "*.jpg"), "--weights", files["weights"],
                 "--output-dir", str(out)]) == 2
    assert len(_stderr_lines(capsys)) == 2
    assert sorted(os.listdir(out)) == ["astronaut.json", "astronaut.png"]
    assert (out / "astronaut.png").read_bytes() == written


def test_outputs_never_overwrite_inputs_or_each_other(files, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "camera.png").write_bytes((files["photos"] / "camera.png").read_bytes())
    before = (copy / "camera.png").read_bytes()
    argv = ["--weights", files["weights"], "--output-dir", str(copy)]
    assert main(["segment", str(copy / "camera.png"), *argv]) == 2
    assert _stderr_lines(capsys) == [
        f"deeplab-xception segment: error: {copy / 'camera.png'}: would overwrite the input "
        f"image {copy / 'camera.png'}; choose another --output-dir"]
    assert (copy / "camera.png").read_bytes() == before
    cv2.imwrite(str(copy / "camera.jpg"), cv2.imread(str(copy / "camera.png")))
    (copy / "other").mkdir()
    (copy / "other" / "camera.png").write_bytes(before)
    out = tmp_path / "out"
    assert main(["segment", str(copy / "camera.png"), str(copy / "camera.jpg"),
                 str(copy / "other" / "camera.png"), "--weights", files["weights"],
                 "--output-dir", str(out), "--json"]) == 0
    written = sorted(os.path.relpath(os.path.join(d, n), out) for d, _, ns in os.walk(out) for n in ns)
    assert written == ["camera.jpg.json", "camera.jpg.png", "camera.png.json", "camera.png.png",
                       "other/camera.json", "other/camera.png"]  # each image's outputs survive
    for name in ("camera.jpg", "camera.png"):
        assert json.loads((out / f"{name}.json").read_text())["image"] == str(copy / name)
    capsys.readouterr()
    assert main(["segment", str(copy), "--weights", files["weights"],
                 "--output-dir", str(copy / "camera.png")]) == 2
    assert _stderr_lines(capsys)[0].endswith(
        f"--output-dir: {copy / 'camera.png'} is a file, not a directory")
    assert sorted(os.listdir(copy)) == ["camera.jpg", "camera.png", "other"]


def test_images_sharing_a_name_mirror_their_folders(files, tmp_path, capsys):
    cameras = {"a": files["photos"] / "astronaut.jpg", "b": files["photos"] / "rotated.jpg",
               "b/old": files["photos"] / "camera.png"}
    for folder, source in cameras.items():
        (tmp_path / "photos" / folder).mkdir(parents=True)
        (tmp_path / "photos" / folder / "IMG_0001.jpg").write_bytes(source.read_bytes())
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "photos" / "**" / "*.jpg"), "--weights",
                 files["weights"], "--output-dir", str(out)]) == 0
    capsys.readouterr()
    written = sorted(os.path.relpath(os.path.join(d, n), out) for d, _, ns in os.walk(out) for n in ns)
    assert written == ["a/IMG_0001.png", "b/IMG_0001.png", "b/old/IMG_0001.png"]
    for folder, source in cameras.items():  # each label map is its own image's
        assert main(["segment", str(source), "--weights", files["weights"],
                     "--output-dir", str(tmp_path / "alone" / folder)]) == 0
        alone = tmp_path / "alone" / folder / (source.stem + ".png")
        assert (out / folder / "IMG_0001.png").read_bytes() == alone.read_bytes()


def test_batches_give_the_same_labels_and_class_options(files, tmp_path, capsys):
    same = tmp_path / "same"
    same.mkdir()
    for i in range(3):
        image = cv2.resize(skimage.data.chelsea(), (48, 40))
        cv2.imwrite(str(same / f"cat{i}.png"), _bgr(np.roll(image, 7 * i, axis=1)))
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"thing{i} {i} {2 * i} {3 * i}\n" for i in range(21)))
    for batch_size in (1, 2):
        assert main(["segment", str(same / "*.png"), "--weights", files["weights"],
                     "--output-dir", str(tmp_path / f"b{batch_size}"), "--json",
                     "--batch-size", str(batch_size), "--classes", str(classes)]) == 0
    for i in range(3):
        with Image.open(tmp_path / "b1" / f"cat{i}.png") as one, \
                Image.open(tmp_path / "b2" / f"cat{i}.png") as two:
            np.testing.assert_array_equal(np.array(one), np.array(two))
            assert one.getpalette()[:9] == [0, 0, 0, 1, 2, 3, 2, 4, 6]
        report = json.loads((tmp_path / "b2" / f"cat{i}.json").read_text())
        assert all(c["name"] == f"thing{c['index']}" for c in report["classes"])
    capsys.readouterr()
    argv = ["segment", str(same), "--weights", files["weights"], "--output-dir", str(tmp_path)]
    assert main([*argv, "--dataset", "cityscapes"]) == 2
    assert _stderr_lines(capsys)[-1].endswith(
        f"--dataset cityscapes: has 19 classes but {files['weights']} predicts 21")
    assert main([*argv, "--batch-size", "0"]) == 2
    assert "--batch-size: must be at least 1, got 0" in _stderr_lines(capsys)[-1]


def test_read_batches_group_images_of_one_size(tmp_path):
    paths = []
    for i, (height, width) in enumerate([(8, 9), (5, 6), (8, 9), (8, 9), (5, 6), (7, 7)]):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((height, width, 3), i, np.uint8))
    paths.insert(2, str(tmp_path / "missing.png"))
    failed = []
    batches = [[os.path.basename(p) for p, _ in b] for b in read_batches(paths, 2, failed.append)]
    assert batches == [["0.png", "2.png"], ["1.png", "4.png"], ["3.png"], ["5.png"]]
    assert [len(b) for b in read_batches(paths, 1, failed.append)] == [1] * 6
    assert [str(e) for e in failed] == [f"{paths[2]}: no such file"] * 2

    consumed = []

    def distinct_sizes():
        for size in range(1, 11):
            consumed.append(str(tmp_path / f"size{size}.png"))
            cv2.imwrite(consumed[-1], np.zeros((size, size, 3), np.uint8))
            yield consumed[-1]

    first = next(read_batches(distinct_sizes(), 2, failed.append))  # 4 batches may wait
    assert len(consumed) == 9 and [p for p, _ in first] == consumed[:1]


def test_class_names_default_by_class_count():
    names, palette = class_table(None, None, 19, "w.keras")
    assert names == list(cityscapes.CLASSES)
    np.testing.assert_array_equal(palette, cityscapes.PALETTE)
    names, palette = class_table(None, None, 5, "w.keras")
    assert names == ["class 0", "class 1", "class 2", "class 3", "class 4"]
    np.testing.assert_array_equal(palette, bit_palette(5))


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_non_positive_scales_are_refused_by_name(command, files, tmp_path, capsys):
    inputs = [str(files["photos"])] if command == "segment" else ["--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *inputs, "--weights", files["weights"],
              "--output-dir", str(tmp_path / "out"), "--scales", "1", "0"])
    assert exit_info.value.code == 2
    assert "argument --scales: scales must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_or_unwritable_output_dir_is_one_line_and_leaves_nothing(
        files, tmp_path, capsys, monkeypatch):
    """posix_fallocate answers ENOSPC as on a full disk, where writing into the sparse
    memory-mapped .npy would have killed the process with SIGBUS."""
    import errno

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "out"
    photo = str(files["photos"] / "camera.png")
    with monkeypatch.context() as patch:
        patch.setattr(os, "posix_fallocate", disk_full)
        assert main(["segment", photo, "--weights", files["weights"], "--output-dir", str(out),
                     "--save-probabilities"]) == 2
    assert _stderr_lines(capsys) == [f"deeplab-xception segment: error: {out / 'camera.npy'}: "
                                     "cannot write it (No space left on device)"]
    assert os.listdir(out) == []  # neither the .npy nor its temporary

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path)
                        else real_access(p, mode))
    for command, inputs in [("segment", [photo]), ("evaluate", ["--data", str(tmp_path)])]:
        assert main([command, *inputs, "--weights", files["weights"],
                     "--output-dir", str(tmp_path / "new")]) == 2
        assert _stderr_lines(capsys) == [f"deeplab-xception {command}: error: --output-dir: "
                                         f"{tmp_path / 'new'} is not writable (permission denied)"]
        assert main([command, *inputs, "--weights", files["weights"],
                     "--output-dir", photo]) == 2
        assert _stderr_lines(capsys)[-1].endswith(f"--output-dir: {photo} is a file, not a directory")
    assert sorted(os.listdir(tmp_path)) == ["out"]
