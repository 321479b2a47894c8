"""The published DeepLab Xception checkpoints (the official model zoo), by name.

One record per archive, as the zoo publishes it: where it is, what it holds
(backbone, classes, output stride, crop), the input it expects, what it was
trained on, under which terms, and the evaluation settings behind each
published number. The zoo publishes no digests: `sha256` stays None until
one is known, and every download's digest is recorded on first use instead.
"""

import dataclasses

from deeplab_xception.data.classes import EVAL_CROP_SIZES
from deeplab_xception.data.preprocessing import CLASSIFIER_IMAGE_SIZE, INCEPTION

_DOWNLOADS = "https://download.tensorflow.org/models/"
SOURCE = "https://github.com/tensorflow/models/blob/master/research/deeplab/g3doc/model_zoo.md"
LICENSE = "Apache-2.0 (tensorflow/models); the training data's own terms apply too"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishedResult:
    output_stride: int
    scales: tuple
    flip: bool
    miou: float              # fraction, on `split`
    split: str
    multiply_adds: float = None  # per image at the evaluation crop, when published


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pretrained:
    name: str
    url: str
    sha256: str = None       # hex digest of the archive, checked on download when set
    backbone: str
    kind: str                # the model kind the archive holds: "deeplab" or an ImageNet "backbone"
    num_classes: int = None  # of the logits, when the archive has them
    output_stride: int       # the one it was trained at
    crop_size: tuple = None  # evaluation crop (height, width)
    preprocessing: str = INCEPTION
    dataset: str
    license: str = LICENSE
    source: str = SOURCE
    results: tuple = ()


_VOC_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
_CITYSCAPES_SCALES = (0.75, 1.0, 1.25)
# ImageNet classifiers without their logits, trained at 299 x 299.
_IMAGENET = dict(kind="backbone", output_stride=32, dataset="ImageNet",
                 crop_size=(CLASSIFIER_IMAGE_SIZE, CLASSIFIER_IMAGE_SIZE))
# The PASCAL VOC models: 21 classes, trained at output stride 16, evaluated on VOC's crop.
_VOC = dict(backbone="xception_65", kind="deeplab", num_classes=21, output_stride=16,
            crop_size=EVAL_CROP_SIZES["voc"])

PRETRAINED = (
    Pretrained(
        name="xception65_coco_voc_trainaug", **_VOC,
        url=_DOWNLOADS + "deeplabv3_pascal_train_aug_2018_01_04.tar.gz",
        dataset="MS-COCO, then PASCAL VOC 2012 train_aug",
        results=(PublishedResult(output_stride=16, scales=(1.0,), flip=False, miou=0.8220,
                                 split="val", multiply_adds=54.17e9),
                 PublishedResult(output_stride=8, scales=_VOC_SCALES, flip=True, miou=0.8358,
                                 split="val", multiply_adds=3055.35e9))),
    Pretrained(
        name="xception65_coco_voc_trainval", **_VOC,
        url=_DOWNLOADS + "deeplabv3_pascal_trainval_2018_01_04.tar.gz",
        dataset="MS-COCO, then PASCAL VOC 2012 train_aug + trainval",
        results=(PublishedResult(output_stride=8, scales=_VOC_SCALES, flip=True, miou=0.8780,
                                 split="test", multiply_adds=3055.35e9),)),
    Pretrained(
        name="xception65_cityscapes_trainfine", backbone="xception_65", kind="deeplab",
        num_classes=19, output_stride=16, crop_size=EVAL_CROP_SIZES["cityscapes"],
        url=_DOWNLOADS + "deeplabv3_cityscapes_train_2018_02_06.tar.gz",
        dataset="ImageNet, then Cityscapes train_fine",
        results=(PublishedResult(output_stride=16, scales=(1.0,), flip=False, miou=0.7879,
                                 split="val", multiply_adds=418.64e9),
                 PublishedResult(output_stride=8, scales=_CITYSCAPES_SCALES, flip=True,
                                 miou=0.8042, split="val", multiply_adds=8677.92e9))),
    Pretrained(
        name="xception65_ade20k_train", backbone="xception_65", kind="deeplab",
        num_classes=151, output_stride=16,
        url=_DOWNLOADS + "deeplabv3_xception_ade20k_train_2018_05_29.tar.gz",
        dataset="ImageNet, then ADE20K train",
        results=(PublishedResult(output_stride=8, scales=_VOC_SCALES, flip=True, miou=0.4565,
                                 split="val"),)),
    Pretrained(name="xception41_imagenet", backbone="xception_41", **_IMAGENET,
               url=_DOWNLOADS + "xception_41_2018_05_09.tar.gz"),
    Pretrained(name="xception65_imagenet", backbone="xception_65", **_IMAGENET,
               url=_DOWNLOADS + "deeplabv3_xception_2018_01_04.tar.gz"),
    Pretrained(name="xception71_imagenet", backbone="xception_71", **_IMAGENET,
               url=_DOWNLOADS + "xception_71_2018_05_09.tar.gz"),
)

ZOO = {p.name: p for p in PRETRAINED}
