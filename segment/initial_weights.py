"""Starting weights for fine-tuning, copied layer by layer by name.

Sources, in the order a run looks for them: (1) a pretraining run's
model.keras classifier, (2) an official ImageNet or DeepLab checkpoint (or a
DeepLab model.keras), both opened with `deeplab_xception.load_model`. Every
backbone layer must be found with equal shapes; the head is copied when the
source has it; the logits only when asked for and the classes agree.
"""

import numpy as np

from deeplab_xception.errors import UserError
from deeplab_xception.weights import load_model

LOGITS = "logits.semantic"


def _source_layers(source):
    return {layer.name: layer for layer in source.layers if layer.weights}


def copy_weights(model, source, name, last_layer=False):
    """Copies `source`'s weights into `model` by layer name; returns the copied layer names."""
    available = _source_layers(source)
    if last_layer and LOGITS not in available:
        raise UserError(f"{name}: has no {LOGITS} layer to copy (init.last_layer)")
    if last_layer and source.num_classes != model.num_classes:
        raise UserError(f"{name}: the checkpoint has {source.num_classes} classes but the class "
                        f"list has {model.num_classes}; set init.last_layer=false to start the "
                        "logits afresh")
    backbone = {layer.name for layer in model.backbone.layers if layer.weights}
    copied = []
    for layer in model.layers:
        if not layer.weights or (layer.name == LOGITS and not last_layer):
            continue
        if layer.name not in available:
            if layer.name in backbone:
                raise UserError(f"{name}: has no layer {layer.name}; it holds another backbone")
            continue
        values = available[layer.name].get_weights()
        expected = [tuple(w.shape) for w in layer.weights]
        if [np.shape(v) for v in values] != expected:
            raise UserError(f"{name}: layer {layer.name} has shapes "
                            f"{[np.shape(v) for v in values]}, the model needs {expected}")
        layer.set_weights(values)
        copied.append(layer.name)
    return copied


def load_initial_weights(model, weights, last_layer=False):
    return copy_weights(model, load_model(weights), weights, last_layer)
