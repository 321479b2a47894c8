"""Starting weights from another model, matched by layer name.

Layer names mirror the official scopes, so an ImageNet classifier's backbone
and a DeepLabv3+ built on the same variant share them: loading a pretrained
`model.keras` into a fresh DeepLab copies every backbone layer and leaves the
segmentation head (whose names the classifier lacks) as initialized.
"""

import os

import keras

from deeplab_xception.errors import UserError


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def load_matching_weights(model, path):
    """Copies the weights of every same-named, same-shaped layer of the model saved at `path`.

    `path` is a `.keras` file (what the trainer writes at the end). Returns
    the names of the layers copied; a UserError if none match.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"init_checkpoint: {path}: no such file")
    if not path.endswith(".keras"):
        raise UserError(f"init_checkpoint: {path}: expected a .keras model file")
    source = keras.saving.load_model(path, compile=False)
    sources = {layer.name: layer for layer in _layers(source) if layer.weights}
    copied = []
    for layer in _layers(model):
        match = sources.get(layer.name)
        if match is None or not layer.weights:
            continue
        weights = match.get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            continue
        layer.set_weights(weights)
        copied.append(layer.name)
    if not copied:
        raise UserError(f"init_checkpoint: {path}: no layer name matches the model")
    return copied
