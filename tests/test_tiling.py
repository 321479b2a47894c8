"""Tiled inference: exact where tiles cover the receptive field, the blend as specified,
and images too large refused from their header before decoding."""

import json
import os
import struct
import subprocess
import sys
import zlib

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.cli import main
from deeplab_xception.errors import UserError
from deeplab_xception.runtime.segmenter import Segmenter
from deeplab_xception.runtime.tiling import ScaledImages, tile_spans
from helpers import randomize_weights

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = build_model("deeplab", backbone="xception_tiny", num_classes=NUM_CLASSES)
    randomize_weights(model, seed=3, scale=0.2)
    path = tmp_path_factory.mktemp("tiling") / "tiny.keras"
    model.save(path)
    return model, str(path)


def _images(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (1, height, width, 3)).astype(np.uint8)


def _pointwise_logits(images):
    """A model whose receptive field is one pixel: a linear map of every 4th pixel."""
    weights = np.linspace(-1.0, 1.0, 3 * NUM_CLASSES, dtype=np.float32).reshape(3, NUM_CLASSES)
    return np.asarray(images)[:, ::4, ::4] @ weights


def test_tile_spans_cover_the_image_on_the_output_stride_grid():
    assert tile_spans(150, 65, 32, 16) == [(0, 65), (16, 65), (48, 65), (80, 70)]
    assert tile_spans(65, 65, 32, 16) == [(0, 65)]
    for size in (66, 100, 513, 1000, 3024):
        spans = tile_spans(size, 513 if size > 513 else 65, 336 if size > 513 else 32, 16)
        starts = [s for s, _ in spans]
        assert starts == sorted(set(starts)) and all(s % 16 == 0 for s in starts)
        assert spans[-1][0] + spans[-1][1] == size
        assert all(a + length > b for (a, length), (b, _) in zip(spans, spans[1:]))


def test_scaled_crops_are_the_whole_resized_image_cut():
    images = _images(37, 45)
    for flip in (False, True):
        whole = tf.compat.v1.image.resize_bilinear(images.astype(np.float32) * (2 / 255) - 1,
                                                   (61, 70), align_corners=True).numpy()
        if flip:
            whole = whole[:, :, ::-1]
        scaled = ScaledImages(images, (61, 70), lambda x: x.astype(np.float32) * (2 / 255) - 1,
                              flip)
        np.testing.assert_allclose(scaled.crop(0, 0, 61, 70), whole, atol=1e-6)
        np.testing.assert_array_equal(scaled.crop(16, 32, 20, 38),
                                      scaled.crop(0, 0, 61, 70)[:, 16:36, 32:70])


@pytest.mark.parametrize("scales,flip", [((1.0,), False), ((0.75, 1.0, 1.5), True)])
def test_tiles_give_whole_image_results_where_they_cover_the_receptive_field(
        tiny, scales, flip):
    """With a receptive field of one pixel, 48x48 tiles (nine and more per pass) and whole
    images must agree to rounding at every scale and flip."""
    model, _ = tiny
    images = _images(97, 130, seed=1)
    tiled = Segmenter(model, scales=scales, flip=flip, tile=(48, 48))
    whole = Segmenter(model, scales=scales, flip=flip, tile="off")
    whole.logits_model = _pointwise_logits
    calls = []
    tiled.logits_model = lambda x: calls.append(x.shape) or _pointwise_logits(x)
    np.testing.assert_allclose(tiled.probabilities(images), whole.probabilities(images),
                               atol=1e-6)
    assert len(calls) >= 6 * len(scales) * (1 + flip)
    assert max(shape[1] for shape in calls) < 48 + 16 and max(shape[2] for shape in calls) < 64


def test_one_tile_covering_the_image_is_whole_image_inference(tiny):
    model, _ = tiny
    images = _images(41, 53, seed=2)
    scales = (0.5, 1.0, 1.25)
    tiled = Segmenter(model, scales=scales, flip=True, tile=(67, 67)).probabilities(images)
    whole = Segmenter(model, scales=scales, flip=True, tile="off").probabilities(images)
    np.testing.assert_array_equal(tiled, whole)
    single = keras.ops.softmax(model(images.astype("float32") * (2 / 255) - 1))
    np.testing.assert_allclose(Segmenter(model, tile=(64, 64)).probabilities(images), single,
                               atol=1e-5)


def _reference_blend(model, images, scales, flip, spans):
    """DeepLab's multi-scale + flip eval with the mean of tile logits, written with TF ops."""
    logits_layer = keras.Model(model.input, model.get_layer(model.LOGITS).output)
    height, width = images.shape[1:3]
    images = images.astype(np.float32) * (2 / 255) - 1
    total = 0
    for scale in scales:
        size = (int((height - 1) * scale + 1), int((width - 1) * scale + 1))
        scaled = tf.compat.v1.image.resize_bilinear(images, size, align_corners=True).numpy()
        for flipped in (False, True)[:1 + flip]:
            x = scaled[:, :, ::-1] if flipped else scaled
            grid = (-(-size[0] // 4), -(-size[1] // 4))
            logits = np.zeros((1, *grid, NUM_CLASSES))
            count = np.zeros(grid)
            for top, tile_height in spans[size[0]]:
                for left, tile_width in spans[size[1]]:
                    y = logits_layer(x[:, top:top + tile_height, left:left + tile_width]).numpy()
                    rows = slice(top // 4, top // 4 + y.shape[1])
                    columns = slice(left // 4, left // 4 + y.shape[2])
                    logits[:, rows, columns] += y
                    count[rows, columns] += 1
            logits = (logits / count[None, :, :, None]).astype(np.float32)
            intermediate = (int((height - 1) * max(1, scale) / 4 + 1),
                            int((width - 1) * max(1, scale) / 4 + 1))
            logits = tf.compat.v1.image.resize_bilinear(logits, intermediate, align_corners=True)
            if flipped:
                logits = logits[:, :, ::-1]
            logits = tf.compat.v1.image.resize_bilinear(logits, (height, width), align_corners=True)
            total = total + tf.nn.softmax(logits).numpy()
    return total / (len(scales) * (1 + flip))


def test_tiled_inference_on_a_larger_image_is_the_mean_of_tile_logits(tiny):
    model, _ = tiny
    images = _images(97, 150, seed=4)
    # tiles 65: stride int(65 * 2/3) = 43, rounded down to the output stride 16 -> 32
    # tiles of 65 at strides of at most int(65 * 2/3) // 16 * 16 = 32, last one to the edge;
    # scale 0.75 makes the image 73 x 112
    spans = {97: [(0, 65), (32, 65)], 150: [(0, 65), (16, 65), (48, 65), (80, 70)],
             73: [(0, 73)], 112: [(0, 65), (16, 65), (32, 80)]}
    segmenter = Segmenter(model, scales=(0.75, 1.0), flip=True, tile=(65, 65))
    counted = []
    segmenter.on_call = lambda: counted.append(1)  # what segment's tile progress bar counts
    got = segmenter.probabilities(images)
    calls = 2 * (len(spans[73]) * len(spans[112]) + len(spans[97]) * len(spans[150]))
    assert segmenter.calls(97, 150) == len(counted) == calls == 22
    expected = _reference_blend(model, images, (0.75, 1.0), True, spans)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    whole = Segmenter(model, scales=(0.75, 1.0), flip=True, tile="off").probabilities(images)
    assert np.abs(got - whole).max() > 1e-4  # image pooling sees the tile, not the image


def _png(path, width, height):
    """A 1-bit gray PNG of zeros written by hand: a few KB on disk, width x height decoded."""
    def chunk(chunk_type, data):
        return (struct.pack(">I", len(data)) + chunk_type + data
                + struct.pack(">I", zlib.crc32(chunk_type + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + -(-width // 8))
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_from_its_header(tiny, tmp_path, capsys):
    _, weights = tiny
    bomb = tmp_path / "bomb.png"
    _png(bomb, 20000, 20000)
    assert bomb.stat().st_size < 200_000
    probe = ("import resource, sys, time\n"
             "from deeplab_xception.runtime.image_files import read_batches\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "start = time.perf_counter()\n"
             "failed = []\n"
             "assert list(read_batches([sys.argv[1]], 1, failed.append)) == []\n"
             "print(time.perf_counter() - start, "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
             "print(failed[0])\n")
    result = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True,
                            text=True, check=True)
    seconds, grown_kib = map(float, result.stdout.splitlines()[0].split())
    assert seconds < 1.0 and grown_kib < 20_000  # decoding would take 1.2 GB
    assert result.stdout.splitlines()[1] == (  # the library names its argument, the CLI its flag
        f"{bomb}: 20000x20000 pixels (400 megapixels) exceed the limit of 100 megapixels "
        "(max_pixels)")

    out = tmp_path / "out"
    assert main(["segment", str(bomb), "--weights", weights, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"deeplab-xception segment: error: {bomb}: 20000x20000 pixels (400 "
                   "megapixels) exceed the limit of 100 megapixels (--max-pixels)"]
    assert not out.exists()


def test_scales_that_make_an_image_too_large_are_refused_and_the_limit_is_an_option(
        tiny, tmp_path, capsys):
    _, weights = tiny
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), _images(90, 120)[0])
    out = tmp_path / "out"
    argv = ["segment", str(photo), "--weights", weights, "--output-dir", str(out)]
    assert main([*argv, "--max-pixels", "20000", "--scales", "1", "1.5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"deeplab-xception segment: error: {photo}: 120x90 pixels at scale 1.5 become 179x134 "
        "(0.024 megapixels), more than the limit of 0.02 megapixels (--max-pixels)"]
    assert not out.exists()
    assert main([*argv, "--max-pixels", "30000", "--scales", "1", "1.5", "--json"]) == 0
    assert json.loads((out / "photo.json").read_text())["width"] == 120
    with pytest.raises(UserError, match="120x90 pixels .* exceed the limit of 0.01 megapixels"):
        Segmenter(build_model("deeplab", backbone="xception_tiny", num_classes=2),
                  max_pixels=10_000).labels(_images(90, 120))


def test_a_broken_png_is_one_line_without_libpng_noise(tiny, tmp_path, capfd):
    _, weights = tiny
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _images(40, 40)[0])
    broken = tmp_path / "broken.png"
    data = good.read_bytes()
    broken.write_bytes(data[:60] + b"\0" * 40 + data[100:])
    capfd.readouterr()
    assert main(["segment", str(broken), "--weights", weights,
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = capfd.readouterr().err
    assert f"deeplab-xception segment: error: {broken}: not a readable image\n" in err
    assert "libpng" not in err and "CRC" not in err


@pytest.mark.parametrize("tile,message", [
    (["0", "5"], "argument --tile: expected auto, off, or a tile size H W"),
    (["big"], "argument --tile: expected auto, off, or a tile size H W"),
    (["20", "20"], "tile: 20x20 is smaller than twice the output stride (32)")])
def test_bad_tile_sizes_are_refused_by_name(tiny, tmp_path, capsys, tile, message):
    _, weights = tiny
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), _images(40, 40)[0])
    argv = ["segment", str(photo), "--weights", weights, "--output-dir", str(tmp_path / "out"),
            "--tile", *tile]
    try:
        status = main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_hdr_sizes_come_from_their_header_and_every_refused_file_is_skipped_by_name(
        tiny, tmp_path, capsys, monkeypatch):
    """PIL reads no Radiance header: a 60000x60000 HDR (OpenCV's decoder refuses it with a
    cv2.error) is refused from the header the package reads, a small one over the limit is
    skipped by name, and the rest of the run goes on."""
    from deeplab_xception.runtime import image_files

    _, weights = tiny
    bomb = tmp_path / "bomb.hdr"
    bomb.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 60000 +X 50000\n" + b"\0" * 64)
    small = tmp_path / "small.hdr"
    cv2.imwrite(str(small), np.random.default_rng(0).uniform(0, 1, (40, 30, 3)).astype("float32"))
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), _images(20, 30)[0])
    out = tmp_path / "out"
    argv = ["segment", str(bomb), str(small), str(photo), "--weights", weights,
            "--output-dir", str(out), "--max-pixels", "1000"]
    prefix = "deeplab-xception segment: error: "
    refused = [prefix + f"{bomb}: 50000x60000 pixels (3e+03 megapixels) exceed the limit of "
                        "0.001 megapixels (--max-pixels)",
               prefix + f"{small}: 30x40 pixels (0.0012 megapixels) exceed the limit of "
                        "0.001 megapixels (--max-pixels)"]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines() == refused
    assert sorted(os.listdir(out)) == ["photo.png"]
    monkeypatch.setattr(image_files, "image_size", lambda path: None)  # a header nobody reads
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [prefix + f"{bomb}: not a readable image", refused[1]]


def test_classify_has_the_pixel_limit_too(tmp_path, capsys):
    classifier = build_model("classifier", backbone="xception_tiny", num_classes=3)
    classifier.save(tmp_path / "classifier.keras")
    bomb = tmp_path / "bomb.png"
    _png(bomb, 20000, 20000)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), _images(40, 30)[0])
    argv = ["classify", str(bomb), str(photo), "--weights", str(tmp_path / "classifier.keras")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"deeplab-xception classify: error: {bomb}: 20000x20000 pixels (400 megapixels) exceed "
        "the limit of 100 megapixels (--max-pixels)"]
    assert captured.out.splitlines()[0] == str(photo)
    assert main([argv[0], *argv[2:], "--max-pixels", "1000"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{photo}: 30x40 pixels (0.0012 megapixels) exceed the limit of 0.001 megapixels "
        "(--max-pixels)")
