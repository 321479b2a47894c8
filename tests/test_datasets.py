"""Every dataset format read from a few files in its real layout, TFRecords, augmentation, errors."""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pycocotools import mask as mask_utils

from deeplab_xception.data.files import read_tfrecords
from deeplab_xception.errors import UserError
from deeplab_xception.io import read_image, write_image
from deeplab_xception.cli import main
from deeplab_xception.segment import augment, pipeline
from deeplab_xception.segment.datasets import ade20k, base, cityscapes, load_dataset, voc
from deeplab_xception.data.classes import read_class_list, write_class_list
from deeplab_xception.segment.synthetic import write_synthetic_dataset

RNG = np.random.default_rng(0)


def _image(height, width):
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_image(path, image)


def _write_palette_png(path, indices, palette):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(indices, mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[:len(palette)] = palette
    flat[255] = (224, 224, 192)  # VOC's border color
    image.putpalette(flat.flatten().tolist())
    image.save(path)


def _assert_streams_as_read(dataset):
    """The tf.data stream from the folder holds, in order, what `read` gives."""
    streamed = list(pipeline.decoded_examples(dataset).as_numpy_iterator())
    assert len(streamed) == len(dataset)
    for index, (image, label) in enumerate(streamed):
        expected_image, expected_label = dataset.read(index)
        np.testing.assert_array_equal(label[..., 0], expected_label)
        assert image.shape == expected_image.shape
        if dataset.examples[index].image_path.endswith(".png"):
            np.testing.assert_array_equal(image, expected_image)


def _write_gray_png(path, values):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def test_voc_reads_palette_indices_and_the_augmented_labels(tmp_path):
    label = np.zeros((20, 30), np.uint8)
    label[5:15, 5:12], label[2:8, 20:28] = 15, 7
    label[4, :] = 255
    augmented = np.where(label == 255, 0, label)
    for name in ("2007_000032", "2008_000001"):
        _write(tmp_path / "JPEGImages" / f"{name}.jpg", _image(20, 30))
        _write_palette_png(str(tmp_path / "SegmentationClass" / f"{name}.png"), label, voc.PALETTE)
        _write_gray_png(str(tmp_path / "SegmentationClassAug" / f"{name}.png"), augmented)
    splits = tmp_path / "ImageSets" / "Segmentation"
    splits.mkdir(parents=True)
    (splits / "val.txt").write_text("2007_000032\n")
    (splits / "trainaug.txt").write_text("2007_000032\n2008_000001\n")

    val = load_dataset("voc", str(tmp_path), "val")
    assert len(val) == 1 and val.num_classes == 21 and val.classes[15] == "person"
    image, read = val.read(0)
    assert image.shape == (20, 30, 3)
    np.testing.assert_array_equal(read, label)
    trainaug = load_dataset("voc", str(tmp_path), "trainaug")
    assert len(trainaug) == 2
    np.testing.assert_array_equal(trainaug.read(1)[1], augmented)
    _assert_streams_as_read(val)  # palette PNG indices, 255 borders included
    _assert_streams_as_read(trainaug)
    # The palette is VOC's: person is (192, 128, 128), aeroplane (128, 0, 0).
    assert tuple(voc.PALETTE[15]) == (192, 128, 128) and tuple(voc.PALETTE[1]) == (128, 0, 0)


def test_cityscapes_maps_label_ids_to_the_19_train_ids(tmp_path):
    ids = np.array([[7, 8, 26, 33], [0, 1, 6, 24], [23, 31, 32, 255]], np.uint8)
    stem = "aachen_000000_000019"
    _write(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png", _image(3, 4))
    _write_gray_png(str(tmp_path / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png"), ids)
    dataset = load_dataset("cityscapes", str(tmp_path), "val")
    assert dataset.num_classes == 19 and dataset.examples[0].name == stem
    expected = np.array([[0, 1, 13, 18], [255, 255, 255, 11], [10, 16, 17, 255]], np.uint8)
    np.testing.assert_array_equal(dataset.read(0)[1], expected)
    _assert_streams_as_read(dataset)
    assert tuple(cityscapes.PALETTE[0]) == (128, 64, 128)
    with pytest.raises(UserError, match="train: no such split folder"):
        load_dataset("cityscapes", str(tmp_path), "train")


def test_ade20k_has_the_official_151_classes_with_other_ignored(tmp_path):
    values = np.array([[0, 1, 2], [150, 75, 0]], np.uint8)
    _write(tmp_path / "images" / "validation" / "ADE_val_00000001.jpg", _image(2, 3))
    _write_gray_png(str(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png"), values)
    dataset = load_dataset("ade20k", str(tmp_path), "val")
    assert dataset.num_classes == len(ade20k.CLASSES) == len(ade20k.PALETTE) == 151
    assert dataset.classes[:2] == ("other", "wall") and dataset.classes[150] == "flag"
    assert dataset.ignored_classes == (0,)
    np.testing.assert_array_equal(dataset.read(0)[1], [[255, 1, 2], [150, 75, 255]])
    _assert_streams_as_read(dataset)
    # DeepLab's color map: wall (120, 120, 120), flag (92, 0, 255).
    assert tuple(ade20k.PALETTE[1]) == (120, 120, 120) and tuple(ade20k.PALETTE[150]) == (92, 0, 255)

    _write_gray_png(str(tmp_path / "annotations" / "validation" / "ADE_val_00000001.png"),
                    np.array([[0, 151, 1], [1, 1, 1]]))
    with pytest.raises(UserError, match=r"ADE_val_00000001\.png: label value 151 is out of range"):
        dataset.read(0)


def _rectangle(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_rasterizes_instances_of_the_chosen_categories(tmp_path):
    height, width = 40, 50
    crowd = np.zeros((height, width), np.uint8, order="F")
    crowd[30:38, 2:10] = 1
    rle = mask_utils.encode(crowd)
    rle["counts"] = rle["counts"].decode()
    annotations = {
        "images": [{"id": 7, "file_name": "000000000007.jpg", "height": height, "width": width}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                       {"id": 18, "name": "dog"}],
        "annotations": [
            # A large car, a small dog on top of it, a person that is not a chosen category.
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 600.0,
             "bbox": [5, 5, 30, 20], "segmentation": _rectangle(5, 5, 35, 25)},
            {"id": 2, "image_id": 7, "category_id": 18, "iscrowd": 0, "area": 100.0,
             "bbox": [10, 10, 10, 10], "segmentation": _rectangle(10, 10, 20, 20)},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 50.0,
             "bbox": [40, 5, 5, 10], "segmentation": _rectangle(40, 5, 45, 15)},
            {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1, "area": 64.0,
             "bbox": [2, 30, 8, 8], "segmentation": rle},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(annotations))
    _write(tmp_path / "val2017" / "000000000007.jpg", _image(height, width))

    dataset = load_dataset("coco", str(tmp_path), "val2017", categories=("dog", "car"))
    assert dataset.classes == ("background", "dog", "car")
    label = dataset.read(0)[1]
    assert label.shape == (height, width)
    assert (label[7:24, 7:9] == 2).all() and (label[7:24, 25:33] == 2).all()  # the car
    assert (label[12:19, 12:19] == 1).all()  # the dog, painted over the car
    assert (label[30:38, 2:10] == 255).all()  # crowd: ignored
    assert (label[7:14, 41:44] == 0).all()  # the person is not a chosen category
    assert (label[0:3, :] == 0).all()
    assert set(np.unique(label)) == {0, 1, 2, 255}
    _assert_streams_as_read(dataset)  # rasterized per example inside tf.data

    everything = load_dataset("coco", str(tmp_path), "val2017")
    assert everything.classes == ("background", "person", "car", "dog")
    with pytest.raises(UserError, match="no category named 'cat'"):
        load_dataset("coco", str(tmp_path), "val2017", categories=("cat",))


@pytest.fixture()
def generic_root(tmp_path):
    return write_synthetic_dataset(str(tmp_path / "shapes"), num_train=5, num_val=2, size=33, seed=1)


def test_generic_layout_reads_the_class_list_and_masks(generic_root):
    dataset = load_dataset("generic", generic_root, "train")
    assert dataset.classes == ("background", "disc", "square", "triangle")
    assert tuple(dataset.palette[1]) == (220, 40, 40)
    assert len(dataset) == 5
    image, label = dataset.read(0)
    written = cv2.imread(os.path.join(generic_root, "masks", "train_0000.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(label, written)
    assert image.shape == (33, 33, 3) and label.max() > 0


def test_bad_input_fails_with_the_file_named(generic_root):
    dataset = load_dataset("generic", generic_root, "val")
    mask_path = os.path.join(generic_root, "masks", "val_0000.png")
    _write_gray_png(mask_path, np.zeros((33, 30)))
    with pytest.raises(UserError, match=r"val_0000\.png: label is 30x33 but its image .* is 33x33"):
        dataset.read(0)
    _write_gray_png(mask_path, np.full((33, 33), 4))
    with pytest.raises(UserError, match=r"val_0000\.png: label value 4 is out of range for 4 classes"):
        dataset.read(0)
    with pytest.raises(UserError, match=r"test\.txt: no such split file"):
        load_dataset("generic", generic_root, "test")
    with pytest.raises(UserError, match="'categories' does not apply to generic"):
        load_dataset("generic", generic_root, "val", categories=("dog",))
    with pytest.raises(UserError, match="not one of"):
        load_dataset("pascal", generic_root, "val")


def test_tfrecords_hold_what_direct_reading_gives(generic_root, tmp_path, capsys):
    dataset = load_dataset("generic", generic_root, "train")
    command = ["records", "--format", "generic", "--data", generic_root, "--split", "train",
               "--num-shards", "2", "--output-dir"]
    (tmp_path / "file").write_text("")
    assert main([*command, str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"deeplab-xception records: error: --output-dir: {tmp_path / 'file'} is a file, not a directory")
    assert main([*command, str(tmp_path / "records")]) == 0
    paths = sorted(str(p) for p in (tmp_path / "records").iterdir())
    assert [os.path.basename(p) for p in paths] == ["train-00000-of-00002.tfrecord",
                                                     "train-00001-of-00002.tfrecord"]
    raw = next(iter(tf.data.TFRecordDataset(paths[0])))
    example = tf.train.Example.FromString(raw.numpy()).features.feature
    assert example["image/filename"].bytes_list.value[0] == b"train_0000"
    assert example["image/height"].int64_list.value[0] == 33
    assert example["image/segmentation/class/format"].bytes_list.value[0] == b"png"

    pattern = str(tmp_path / "records" / "train-*")
    images, labels = next(iter(pipeline.train_dataset(pattern, 2, (41, 41))))
    assert images.shape == (2, 41, 41, 3) and labels.shape == (2, 41, 41)
    decoded = list(pipeline.decoded_examples(pattern))
    assert len(decoded) == len(dataset)
    by_label = {label.numpy().tobytes(): image.numpy() for image, label in decoded}
    for index in range(len(dataset)):
        image, label = dataset.read(index)
        np.testing.assert_array_equal(by_label[label[..., None].tobytes()], image)
    _assert_streams_as_read(dataset)


@pytest.mark.parametrize("num_files", [3, 1])
def test_every_tfrecord_is_read_by_exactly_one_input_pipeline(tmp_path, num_files):
    """The Task contract, for both applications' reader: the pipelines' shares partition the
    records, with more files than pipelines (files dealt out) and fewer (records dealt out)."""
    written = list(range(12))
    for shard in range(num_files):
        with tf.io.TFRecordWriter(str(tmp_path / f"part-{shard}")) as writer:
            for value in written[shard::num_files]:
                writer.write(str(value).encode())
    shares = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        stream = read_tfrecords(str(tmp_path / "part-*"), context, shuffle=True)
        shares.append({int(r) for r in stream.as_numpy_iterator()})
    assert shares[0].isdisjoint(shares[1]) and sorted(shares[0] | shares[1]) == written
    endless = read_tfrecords(str(tmp_path / "part-*"), repeat=True).take(24)
    assert sorted(int(r) for r in endless.as_numpy_iterator()) == sorted(written * 2)


def test_augmentation_pads_with_mean_pixel_and_ignore_and_keeps_pixels_aligned():
    label = RNG.integers(0, 4, (21, 17, 1), dtype=np.uint8)
    image = np.concatenate([label * 60, 255 - label * 60, RNG.integers(0, 256, label.shape, np.uint8)],
                           axis=-1).astype(np.uint8)
    padded_image, padded_label = augment.train_augment(image, label, (31, 25), 1.0, 1.0, flip=False)
    np.testing.assert_array_equal(padded_label[21:], 255)
    np.testing.assert_array_equal(padded_label[:, 17:], 255)
    np.testing.assert_allclose(padded_image[21:], 0.0)  # 127.5 after x * 2/255 - 1
    np.testing.assert_allclose(padded_image[:, 17:], 0.0)
    np.testing.assert_array_equal(padded_label[:21, :17], label[..., 0])

    tf.random.set_seed(3)
    for _ in range(8):
        crop, crop_label = augment.train_augment(image, label, (9, 9), 1.0, 1.0, flip=True)
        pixels = np.round((crop.numpy() + 1.0) * 127.5).astype(int)
        np.testing.assert_array_equal(pixels[..., 0], crop_label.numpy() * 60)

    scaled = [augment.train_augment(image, label, (65, 65), 0.5, 2.0, scale_step=0.25)[1]
              for _ in range(12)]
    valid = {int((s.numpy() != 255).sum()) for s in scaled}
    assert len(valid) > 2  # different scales leave different amounts of padding
    assert all(set(np.unique(s.numpy())) <= {0, 1, 2, 3, 255} for s in scaled)


def test_train_dataset_batches_crops_for_one_replica(generic_root):
    dataset = load_dataset("generic", generic_root, "train")
    images, labels = next(iter(pipeline.train_dataset(dataset, 3, (41, 41))))
    assert images.shape == (3, 41, 41, 3) and labels.shape == (3, 41, 41)
    assert labels.dtype == tf.int32 and float(tf.reduce_max(tf.abs(images))) <= 1.0
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    shard = [label.numpy()[..., 0] for _, label in pipeline.decoded_examples(dataset, context)]
    assert len(shard) == 2  # examples 1 and 3
    np.testing.assert_array_equal(shard[1], dataset.read(3)[1])


def test_training_and_evaluation_readers_agree_on_gray_rgba_16_bit_and_palette(tmp_path):
    """tf.io (training, in-training eval) and OpenCV (`records`, `read`) see the same pixels."""
    gray = RNG.integers(0, 256, (9, 11), dtype=np.uint8)
    files = {
        "gray.png": Image.fromarray(gray, mode="L"),
        "rgba.png": Image.fromarray(RNG.integers(0, 256, (9, 11, 4), dtype=np.uint8), mode="RGBA"),
        "gray16.png": Image.fromarray(RNG.integers(0, 65536, (9, 11)).astype(np.uint16)),
        "palette.png": Image.fromarray(gray, mode="P"),
    }
    files["palette.png"].putpalette(RNG.integers(0, 256, 768).tolist())
    for name, image in files.items():
        image.save(tmp_path / name)
    cv2.imwrite(str(tmp_path / "rgb16.png"), RNG.integers(0, 65536, (9, 11, 3)).astype(np.uint16))
    for name in [*files, "rgb16.png"]:
        path = str(tmp_path / name)
        from_tf = pipeline.decode_image(path).numpy()
        np.testing.assert_array_equal(from_tf, read_image(path, exif_orientation=False), err_msg=name)
    # Independent references: gray replicated; the palette's colors; 16-bit to its high byte.
    np.testing.assert_array_equal(read_image(str(tmp_path / "gray.png")), np.stack([gray] * 3, -1))
    colors = np.array(files["palette.png"].getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(read_image(str(tmp_path / "palette.png")), colors[gray])
    high = cv2.imread(str(tmp_path / "rgb16.png"), cv2.IMREAD_UNCHANGED)[..., ::-1] >> 8
    np.testing.assert_array_equal(read_image(str(tmp_path / "rgb16.png")), high)


def test_class_names_with_spaces_round_trip(tmp_path):
    path = str(tmp_path / "classes.txt")
    write_class_list(path, cityscapes.CLASSES, cityscapes.PALETTE)
    names, palette = read_class_list(path)
    assert names[6] == "traffic light" and tuple(names) == cityscapes.CLASSES
    np.testing.assert_array_equal(palette, cityscapes.PALETTE)
    (tmp_path / "plain.txt").write_text("background\npotted plant\nchest of drawers 1 2 3\n")
    names, palette = read_class_list(str(tmp_path / "plain.txt"))
    assert names == ["background", "potted plant", "chest of drawers"]
    assert tuple(palette[2]) == (1, 2, 3) and tuple(palette[1]) == tuple(voc.PALETTE[1])


def test_a_bad_label_value_fails_in_the_stream_naming_the_file(generic_root):
    mask_path = os.path.join(generic_root, "masks", "val_0001.png")
    _write_gray_png(mask_path, np.full((33, 33), 7))
    dataset = load_dataset("generic", generic_root, "val")
    with pytest.raises(UserError, match=r"val_0001\.png: label value 7 is out of range for 4 "
                                        r"classes \(stored values 0\.\.3, 255\)"):
        with pipeline.label_errors_reported():
            list(pipeline.decoded_examples(dataset))
    _write_gray_png(mask_path, np.zeros((33, 30)))
    with pytest.raises(UserError, match=r"val_0001\.png: label is 30x33 but its image"):
        dataset.file_list()


def test_a_truncated_or_huge_image_in_a_dataset_is_named(generic_root, tmp_path):
    """A truncated JPEG passes the header check and fails to decode inside tf.data, whose
    error names no file; a huge header is refused at the header check, by name."""
    dataset = load_dataset("generic", generic_root, "val")
    image_path = dataset.examples[1].image_path
    encoded = cv2.imencode(".jpg", cv2.imread(image_path))[1].tobytes()
    broken = os.path.join(generic_root, "images", "val_0001.jpg")
    with open(broken, "wb") as f:
        f.write(encoded[:len(encoded) // 2])
    os.remove(image_path)
    dataset = load_dataset("generic", generic_root, "val")
    assert dataset.examples[1].image_path == broken
    files = dataset.file_list()  # the header is whole
    with pytest.raises(UserError) as error:
        with pipeline.label_errors_reported(dataset):
            list(pipeline.decoded_examples(dataset, files=files))
    assert str(error.value).startswith(f"{broken}: not a readable image (TensorFlow cannot decode")
    assert "\n" not in str(error.value)

    huge = Image.new("1", (20000, 20000))
    huge.save(broken[:-len(".jpg")] + ".png")
    os.remove(broken)
    with pytest.raises(UserError, match=r"val_0001\.png: 20000x20000 pixels, more than the 100 "
                                        "megapixels a dataset image may have"):
        load_dataset("generic", generic_root, "val").file_list()
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.png: not a readable image$"):
        base._header(str(tmp_path / "empty.png"), "image")
