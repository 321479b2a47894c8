"""Segmenting image files: finding them, planning outputs, batching, writing the results.

What `segment`, `export` and the Python API share; the CLI adds argument parsing and messages.
"""

import collections
import contextlib
import glob
import os

import numpy as np

from deeplab_xception.data.classes import NAMED, bit_palette, read_class_list
from deeplab_xception.data.files import IMAGE_EXTENSIONS, is_image_file
from deeplab_xception.models.deeplab import DeepLabV3Plus
from deeplab_xception.errors import ArgumentError, UserError
from deeplab_xception.runtime.limits import DEFAULT_MAX_PIXELS, check_pixel_limit
from deeplab_xception.io import image_size, open_npy, read_image, write_image, write_json
from deeplab_xception.runtime.visualize import class_fractions, overlay, write_label_png
from deeplab_xception.weights import load_model

WAITING_BATCHES = 4  # images held back to fill batches of their size, in batches
OUTPUT_SUFFIXES = {"labels": ".png", "overlay": ".overlay.png", "json": ".json",
                   "probabilities": ".npy"}


def find_images(inputs):
    """(image paths, problems) from files, directories and glob patterns, each path once."""
    found, problems = {}, []
    for name in inputs:
        if os.path.isfile(name):
            paths = [name]
        elif os.path.isdir(name):
            paths = _images_in(sorted(os.path.join(name, entry) for entry in os.listdir(name)))
            if not paths:
                problems.append(f"{name}: directory holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        elif glob.has_magic(name):
            paths = _images_in(sorted(glob.glob(name, recursive=True)))
            if not paths:
                problems.append(f"{name}: no image file matches")
        else:
            paths = []
            problems.append(f"{name}: no such file")
        for path in paths:
            found.setdefault(os.path.realpath(path), path)
    return list(found.values()), problems


def _images_in(paths):
    """The image files among `paths` (files named one by one may have any extension)."""
    return [p for p in paths if os.path.isfile(p) and is_image_file(p)]


def plan_outputs(images, output_dir, outputs):
    """{image: {output: path}} for `outputs` (names in OUTPUT_SUFFIXES); outputs may overwrite
    neither each other nor an input.

    Outputs go straight into `output_dir`, named after their image; when two
    images in different folders share a name (IMG_0001.jpg from two cameras),
    every output goes to its image's folder relative to the folder all the
    images share, mirrored under `output_dir`.
    """
    inputs = {os.path.realpath(path): path for path in images}
    owners, plans = {}, {}
    for path, name in zip(images, output_names(images)):
        stem = os.path.join(output_dir, name)
        plan = {output: stem + OUTPUT_SUFFIXES[output] for output in outputs}
        for target in plan.values():
            real = os.path.realpath(target)
            if real in inputs:
                raise ArgumentError("output_dir", f"{target}: would overwrite the input image "
                                                  f"{inputs[real]}; choose another {{argument}}")
            if owners.setdefault(real, path) != path:
                raise UserError(f"{path}: same name as {owners[real]}; "
                                "their outputs would overwrite each other")
        plans[path] = plan
    return plans


def output_names(images):
    """Each image's name without extension, prefixed with its folder relative to all the
    images' common folder when a name is in several folders; images of one folder that
    differ only in extension (cat.jpg, cat.png) keep it (cat.jpg, cat.png)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
    folders = [os.path.dirname(os.path.abspath(path)) for path in images]
    names = stems
    if len(set(stems)) < len(set(zip(stems, folders))):
        common = os.path.commonpath(folders)
        names = [os.path.normpath(os.path.join(os.path.relpath(folder, common), stem))
                 for folder, stem in zip(folders, stems)]
    counts = collections.Counter(names)
    return [name + os.path.splitext(path)[1] if counts[name] > 1 else name
            for name, path in zip(names, images)]


def load_segmentation_model(weights, output_stride=None):
    model = load_model(weights, output_stride=output_stride)
    if not isinstance(model, DeepLabV3Plus):
        raise UserError(f"{weights}: holds a {model.__class__.__name__}, not a segmentation model")
    return model


def class_list_beside(model_path):
    """Where a model file's class names and colors are kept: `model.keras` ->
    `model.classes.txt` ("name r g b" lines), written by `finetune`."""
    return os.path.splitext(os.fspath(model_path))[0] + ".classes.txt"


def class_table(dataset, classes_file, num_classes, weights):
    """(class names, palette) from `dataset` or `classes_file`; by default the class list kept
    beside a .keras `weights` file, else the dataset with `num_classes` classes, else
    numbered classes in VOC's color map."""
    beside = class_list_beside(weights)
    if not (classes_file or dataset) and str(weights).endswith(".keras") and os.path.isfile(beside):
        classes_file = beside
    if classes_file:
        names, palette = read_class_list(classes_file)
        source = classes_file
    else:
        if dataset is None:
            dataset = next((name for name, (listed, _) in NAMED.items()
                            if len(listed) == num_classes), None)
        if dataset is None:
            return [f"class {i}" for i in range(num_classes)], bit_palette(num_classes)
        names, palette = NAMED[dataset]
        source = f"{{argument}} {dataset}"
    if len(names) != num_classes:
        problem = f"{source}: has {len(names)} classes but {weights} predicts {num_classes}"
        raise UserError(problem) if classes_file else ArgumentError("dataset", problem)
    return list(names), np.asarray(palette, np.uint8)


def read_within_limit(path, scales=(1.0,), max_pixels=DEFAULT_MAX_PIXELS):
    """read_image(path), refused (ArgumentError naming it) when it, or one of its `scales`,
    exceeds `max_pixels`: before decoding when the header gives the size, else after."""
    size = image_size(path) if os.path.isfile(path) else None
    if size:
        check_pixel_limit(*size, scales, max_pixels, source=path)
    image = read_image(path)
    check_pixel_limit(*image.shape[:2], scales, max_pixels, source=path)
    return image


def read_batches(paths, batch_size, failed, scales=(1.0,), max_pixels=DEFAULT_MAX_PIXELS):
    """[(path, image)] lists of one image size, at most `batch_size` long; a batch goes when
    full, or, the largest, when too many images wait. Unreadable files, and files whose
    header says they (or their `scales`) exceed `max_pixels`, go to `failed(error)`
    undecoded."""
    pending = {}
    for path in paths:
        try:
            image = read_within_limit(path, scales, max_pixels)
        except UserError as e:
            failed(e)
            continue
        group = pending.setdefault(image.shape[:2], [])
        group.append((path, image))
        waiting = sum(map(len, pending.values()))
        if len(group) == batch_size or waiting > WAITING_BATCHES * batch_size:
            yield pending.pop(max(pending, key=lambda size: len(pending[size])))
    yield from pending.values()


def segment_batch(segmenter, batch, plans, names, palette, alpha, legend=True):
    """Segments one batch of (path, image) and writes each image's outputs as `plans` says;
    probabilities go straight into memory-mapped .npy files, a block of rows at a time."""
    images = np.stack([image for _, image in batch])
    with contextlib.ExitStack() as files:
        probabilities = None
        if "probabilities" in plans[batch[0][0]]:
            probabilities = [files.enter_context(open_npy(plans[path]["probabilities"],
                                                          (*image.shape[:2], len(names))))
                             for path, image in batch]
        labels = segmenter.labels(images, probabilities)
    for (path, image), image_labels in zip(batch, labels):
        write_outputs(plans[path], path, image, image_labels, names, palette, alpha, legend)


def write_outputs(plan, path, image, labels, names, palette, alpha, legend=True):
    """The label PNG and, as planned, the overlay (with its legend unless not `legend`) and
    the class shares of one image."""
    write_label_png(plan["labels"], labels, palette)
    if "overlay" in plan:
        write_image(plan["overlay"], overlay(image, labels, palette, names, alpha, legend))
    if "json" in plan:
        classes = [{"index": c, "name": names[c], "fraction": f}
                   for c, f in class_fractions(labels, len(names))]
        write_json(plan["json"], {"image": path, "height": labels.shape[0], "width": labels.shape[1],
                                  "labels": plan["labels"], "classes": classes})
