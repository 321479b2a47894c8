"""Starting weights copied from another model, layer by layer, by name.

Layer names are the official scopes, so an ImageNet classifier, a backbone and
a DeepLabv3+ on the same variant share the names of their backbone layers:
copying a pretrained classifier into a fresh DeepLab fills the backbone and
leaves the segmentation head as initialized.
"""

import keras

from deeplab_xception.errors import UserError
from deeplab_xception.models.backbones.base import leaf_layers, variable_pairs, weighted_layers
from deeplab_xception.weights.loading import load_model


def _activations(model):
    """Names of every activation layer, nested models opened up."""
    return [layer.name for layer in leaf_layers(model)
            if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation))]


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
    """Copies `source`'s weights into `model` wherever a layer's name and its variables' names
    and shapes agree (`variable_pairs`).

    Layers named in `required` must be in `source` with the same shapes, or a
    UserError names the first that is not; other layers are copied when they
    match and left alone when they do not; layers in `skip` are never copied.
    The activations between copied layers must sit where the model has them.
    `name` is the source as the user gave it, for errors. Returns the names
    copied; a UserError when nothing matched. The model is changed only when
    every check passed.
    """
    available = weighted_layers(source)
    required = set(required)
    copies = {}
    for layer in weighted_layers(model).values():
        if layer.name in skip:
            continue
        match = available.get(layer.name)
        if match is None:
            if layer.name in required:
                raise UserError(f"{name}: has no layer {layer.name}; it holds another architecture")
            continue
        pairs = variable_pairs(match, layer)
        if pairs is None:
            if layer.name in required:
                raise UserError(f"{name}: layer {layer.name} has shapes {_shapes(match)}, "
                                f"the model needs {_shapes(layer)}")
            continue
        copies[layer.name] = pairs
    if not copies:
        raise UserError(f"{name}: no layer matches the model by name and shape")
    copied = list(copies)
    _check_activations(model, source, name, copied)
    for pairs in copies.values():
        for variable, value in pairs:
            variable.assign(value)
    return copied


def _shapes(layer):
    return [tuple(v.shape) for v in layer.weights]


def load_matching_weights(model, weights, required=(), skip=()):
    """`copy_matching_weights` from anything `load_model` opens: a .keras file, an
    official checkpoint, Keras Xception weights or a zoo name."""
    return copy_matching_weights(model, load_model(weights), weights, required, skip)
