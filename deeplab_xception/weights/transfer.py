"""Starting weights copied from another model, layer by layer, by name.

Layer names are the official scopes, so an ImageNet classifier, a backbone and
a DeepLabv3+ on the same variant share the names of their backbone layers:
copying a pretrained classifier into a fresh DeepLab fills the backbone and
leaves the segmentation head as initialized.
"""

import keras
import numpy as np

from deeplab_xception.errors import UserError
from deeplab_xception.weights.loading import load_model


def _weighted_layers(model):
    """Every layer that holds weights, nested models opened up."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def _activations(model):
    """Names of every activation layer, nested models opened up."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _activations(layer)
        elif isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            yield layer.name


def _check_activations(model, source, name, copied):
    """A UserError when the activations around the copied layers sit elsewhere in `source`:
    weights that agree in name and shape but were trained under another depthwise layout
    (`paper` puts a ReLU after every depthwise batch norm, `checkpoint` does not)."""
    scopes = {layer.rpartition(".")[0] for layer in copied} - {""}

    def near_copied(activations):
        return {a for a in activations
                if any(a[:i] in scopes for i, c in enumerate(a) if c == ".")}

    ours, theirs = near_copied(_activations(model)), near_copied(_activations(source))
    if ours != theirs:
        where = sorted(ours ^ theirs)[0]
        has, lacks = ("the model", "the source") if where in ours else ("the source", "the model")
        raise UserError(f"{name}: activations are placed differently ({has} has {where}, "
                        f"{lacks} does not): it was built with another depthwise_layout")


def copy_matching_weights(model, source, name, required=(), skip=()):
    """Copies `source`'s weights into `model` wherever a layer name and its shapes agree.

    Layers named in `required` must be in `source` with the same shapes, or a
    UserError names the first that is not; other layers are copied when they
    match and left alone when they do not; layers in `skip` are never copied.
    The activations between copied layers must sit where the model has them.
    `name` is the source as the user gave it, for errors. Returns the names
    copied; a UserError when nothing matched. The model is changed only when
    every check passed.
    """
    available = {layer.name: layer for layer in _weighted_layers(source)}
    required = set(required)
    copies = []
    for layer in _weighted_layers(model):
        if layer.name in skip:
            continue
        match = available.get(layer.name)
        if match is None:
            if layer.name in required:
                raise UserError(f"{name}: has no layer {layer.name}; it holds another architecture")
            continue
        values = match.get_weights()
        shapes, expected = [np.shape(v) for v in values], [tuple(w.shape) for w in layer.weights]
        if shapes != expected:
            if layer.name in required:
                raise UserError(f"{name}: layer {layer.name} has shapes {shapes}, "
                                f"the model needs {expected}")
            continue
        copies.append((layer, values))
    if not copies:
        raise UserError(f"{name}: no layer matches the model by name and shape")
    copied = [layer.name for layer, _ in copies]
    _check_activations(model, source, name, copied)
    for layer, values in copies:
        layer.set_weights(values)
    return copied


def load_matching_weights(model, weights, required=(), skip=()):
    """`copy_matching_weights` from anything `load_model` opens: a .keras file, an
    official checkpoint, Keras Xception weights or a zoo name."""
    return copy_matching_weights(model, load_model(weights), weights, required, skip)
