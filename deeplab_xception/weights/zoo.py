"""The published DeepLab Xception checkpoints (the official model zoo), by name.

Facts as the zoo publishes them: archive URL, backbone, classes, training
data, and the evaluation settings behind each published number.
"""

import dataclasses

_DOWNLOADS = "http://download.tensorflow.org/models/"


@dataclasses.dataclass(frozen=True)
class PublishedResult:
    output_stride: int
    scales: tuple
    flip: bool
    miou: float              # fraction, on `split`
    split: str
    multiply_adds: float = None  # per image at the evaluation crop, when published


@dataclasses.dataclass(frozen=True)
class Pretrained:
    name: str
    url: str
    variant: str
    kind: str                # the model kind the archive holds: "deeplab" or an ImageNet "backbone"
    dataset: str
    num_classes: int = None
    crop_size: tuple = None  # evaluation crop (height, width)
    results: tuple = ()


_VOC_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
_CITYSCAPES_SCALES = (0.75, 1.0, 1.25)

PRETRAINED = (
    Pretrained(
        "xception65_coco_voc_trainaug", _DOWNLOADS + "deeplabv3_pascal_train_aug_2018_01_04.tar.gz",
        "xception_65", "deeplab", "MS-COCO, then PASCAL VOC 2012 train_aug", 21, (513, 513),
        (PublishedResult(16, (1.0,), False, 0.8220, "val", 54.17e9),
         PublishedResult(8, _VOC_SCALES, True, 0.8358, "val", 3055.35e9))),
    Pretrained(
        "xception65_coco_voc_trainval", _DOWNLOADS + "deeplabv3_pascal_trainval_2018_01_04.tar.gz",
        "xception_65", "deeplab", "MS-COCO, then PASCAL VOC 2012 train_aug + trainval", 21, (513, 513),
        (PublishedResult(8, _VOC_SCALES, True, 0.8780, "test", 3055.35e9),)),
    Pretrained(
        "xception65_cityscapes_trainfine", _DOWNLOADS + "deeplabv3_cityscapes_train_2018_02_06.tar.gz",
        "xception_65", "deeplab", "ImageNet, then Cityscapes train_fine", 19, (1025, 2049),
        (PublishedResult(16, (1.0,), False, 0.7879, "val", 418.64e9),
         PublishedResult(8, _CITYSCAPES_SCALES, True, 0.8042, "val", 8677.92e9))),
    Pretrained(
        "xception65_ade20k_train", _DOWNLOADS + "deeplabv3_xception_ade20k_train_2018_05_29.tar.gz",
        "xception_65", "deeplab", "ImageNet, then ADE20K train", 151, None,
        (PublishedResult(8, _VOC_SCALES, True, 0.4565, "val"),)),
    Pretrained("xception41_imagenet", _DOWNLOADS + "xception_41_2018_05_09.tar.gz",
               "xception_41", "backbone", "ImageNet"),
    Pretrained("xception65_imagenet", _DOWNLOADS + "deeplabv3_xception_2018_01_04.tar.gz",
               "xception_65", "backbone", "ImageNet"),
    Pretrained("xception71_imagenet", _DOWNLOADS + "xception_71_2018_05_09.tar.gz",
               "xception_71", "backbone", "ImageNet"),
)

ZOO = {p.name: p for p in PRETRAINED}
