"""`load_model`: a ready Keras model from any weights the package knows."""

import os

import h5py
import keras

from deeplab_xception.models.backbones import KERAS_APPLICATIONS_VARIANT, Backbone
from deeplab_xception.models.classifier import XceptionClassifier
from deeplab_xception.models.deeplab import DeepLabV3Plus
from deeplab_xception.errors import ArgumentError, UserError
from deeplab_xception.models.layers import weights_to_come
from deeplab_xception.models import build_model, with_output_stride
from deeplab_xception.weights.checkpoint import OfficialCheckpoint
from deeplab_xception.weights.sources import local_path

MODEL_CLASSES = {"deeplab": DeepLabV3Plus, "classifier": XceptionClassifier, "backbone": Backbone}


def _first_line(error):
    return (str(error).strip().splitlines() or [error.__class__.__name__])[0]


def _check_classes(source, held, asked):
    if held is not None and asked is not None and held != asked:
        raise ArgumentError("num_classes", f"{source} has {held} classes, asked for {asked}")


def _build(source, kind, **options):
    try:
        return build_model(kind, **options)
    except ValueError as e:
        raise UserError(f"{source}: {_first_line(e)}") from None


def _from_model_file(path, kind, num_classes, output_stride, options):
    if options:
        raise UserError(f"{path}: a .keras file fixes the architecture; only num_classes and "
                        f"output_stride apply (got {', '.join(sorted(options))})")
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        with weights_to_come():  # the file holds them all
            model = keras.models.load_model(path)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a readable .keras model ({_first_line(e)})") from None
    if kind == "deeplab" and not isinstance(model, DeepLabV3Plus):
        return _deeplab_on_the_backbone_of(model, path, num_classes, output_stride)
    if kind and not isinstance(model, MODEL_CLASSES[kind]):
        raise UserError(f"{path}: holds a {model.__class__.__name__}, not a {kind} model")
    _check_classes(path, getattr(model, "num_classes", None), num_classes)
    if output_stride is not None and output_stride != getattr(model, "output_stride", None):
        if not isinstance(model, DeepLabV3Plus):
            raise UserError(f"{path}: output_stride applies to DeepLabV3Plus models only")
        try:
            model = with_output_stride(model, output_stride)
        except ValueError as e:
            raise UserError(f"{path}: {_first_line(e)}") from None
    return model


def _deeplab_on_the_backbone_of(model, path, num_classes, output_stride):
    """A DeepLabV3Plus (head initialized, `num_classes`, 21 by default) on the backbone of a
    classifier or backbone model file, copied whole by layer name: the model a fine-tuning
    run starts from (`init.weights`) with a pretraining run's model.keras."""
    from deeplab_xception.weights.transfer import copy_matching_weights  # it loads models too

    backbone = model if isinstance(model, Backbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, Backbone):
        raise UserError(f"{path}: holds a {model.__class__.__name__}, not a model on a backbone")
    try:
        config = backbone.config_at_output_stride(output_stride or 16)
    except ValueError as e:
        raise UserError(f"{path}: {_first_line(e)}") from None
    if "input_shape" in config:
        config["input_shape"] = (None, None, 3)  # a classifier's fixed size is not DeepLab's
    deeplab = DeepLabV3Plus(type(backbone).from_config(config), num_classes=num_classes or 21)
    copy_matching_weights(deeplab, backbone, path, required=tuple(
        layer.name for layer in deeplab.backbone.layers if layer.weights))
    return deeplab


def _h5_has_classifier(path):
    """Whether Keras Xception weights include the top (released `_notop` files do not)."""
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:  # the released .h5 layout, layers by name
                return any(n in (b"predictions", "predictions") for n in f.attrs["layer_names"])
            return any(name.startswith("dense") for name in f.get("layers", {}))
    except OSError:
        raise UserError(f"{path}: not an HDF5 weights file") from None


def _from_keras_h5(path, kind, num_classes, output_stride, options):
    """Chollet's Xception in keras.applications layout (.h5 or .weights.h5), with or without top."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    kind = kind or ("classifier" if _h5_has_classifier(path) else "backbone")
    if output_stride is not None:
        options["output_stride"] = output_stride
    if kind == "classifier":
        options["num_classes"] = num_classes
    model = _build(path, kind, backbone=KERAS_APPLICATIONS_VARIANT, **options)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{path}: not Keras Xception {kind} weights ({_first_line(e)})") from None
    return model


def _from_checkpoint(path, kind, num_classes, output_stride, options):
    checkpoint = OfficialCheckpoint(path)
    kind = kind or checkpoint.kind
    _check_classes(checkpoint.path, checkpoint.num_classes(kind), num_classes)
    options = {**checkpoint.build_options(kind), **options}
    if kind != "backbone":
        options["num_classes"] = num_classes or checkpoint.num_classes(kind)
    model = _build(checkpoint.path, kind, output_stride=output_stride, **options)
    checkpoint.load_into(model)
    return model


def load_model(weights, kind=None, num_classes=None, output_stride=None, cache_dir=None, **options):
    """A Keras model with the weights of `weights`, which may be:

    - the package's model file (`.keras`);
    - an official TF1 checkpoint: prefix (`model.ckpt`), one of its files, a
      directory holding one, the published `.tar.gz`, an http(s) URL of one, or
      a name in `deeplab_xception.weights.ZOO`. The architecture is read off the
      variables; `kind` ("deeplab", "classifier", "backbone") defaults to what
      the checkpoint holds, and a DeepLab kind on an ImageNet checkpoint loads
      the backbone and leaves the head initialized, which is how fine-tuning starts;
    - Keras Xception weights (`.h5`, `.weights.h5`): the classic classifier, or
      its backbone for files without the top.

    `output_stride` sets the backbone's output stride (the weights do not
    change), `num_classes` must agree with the weights when they have logits,
    and other `build_model` arguments (multi_grid, atrous_rates,
    upsample_logits, dropout, input_shape, activation, ...) pass through.
    """
    if "task" in options:
        raise TypeError("load_model: the model kind is now the `kind` argument, not `task`")
    if kind is not None and kind not in MODEL_CLASSES:
        raise ArgumentError("kind", f"{kind!r} is not one of {', '.join(MODEL_CLASSES)}")
    path = local_path(weights, cache_dir)
    if path.endswith(".keras"):
        load = _from_model_file
    elif path.endswith(".h5"):
        load = _from_keras_h5
    else:
        load = _from_checkpoint
    return load(path, kind, num_classes, output_stride, dict(options))
