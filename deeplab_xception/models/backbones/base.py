"""The encoder contract every head relies on, and the config base of every model class.

An encoder is a functional `keras.Model` subclass (`Backbone`) that:

- builds its whole graph in `__init__` from constructor arguments that
  `get_config` returns exactly (list them in `CONFIG`), `output_stride` and
  `dtype` (a Keras dtype policy given to every layer) among them;
- passes `pyramid_outputs`, {stride: feature map}, recorded while it walks its
  layers: the last feature map at each stride, and `output` at `output_stride`;
- says which output strides it can be built at (`reachable_output_strides`).

Then `with_output_stride` rebuilds any model on it at another stride and copies
its weights by layer name, and the DeepLab head composes with it. A new encoder
family is one module defining such a class plus a `register_backbone` entry.
"""

import keras

from deeplab_xception.errors import ArgumentError


def check_output_stride(name, output_stride, reachable, argument="output_stride"):
    """The one "cannot run at this output stride" check, for builders and callers alike."""
    if output_stride not in reachable:
        raise ArgumentError(argument, f"{name} cannot run at output stride {output_stride}; "
                                      f"choose one of {', '.join(map(str, reachable))}")


def _config_value(value):
    if isinstance(value, keras.Model):
        return keras.saving.serialize_keras_object(value)
    return list(value) if isinstance(value, tuple) else value


class ConfigModel(keras.Model):
    """`get_config` is the constructor arguments named in `CONFIG` (nested models serialized).

    Arguments whose attribute name differs (Keras reserves `dtype` and
    `input_shape` on models) are read from `ATTRIBUTES[argument]`.
    """

    CONFIG = ()
    ATTRIBUTES = {"dtype": "layer_dtype", "input_shape": "image_shape"}

    def get_config(self):
        config = {key: _config_value(getattr(self, self.ATTRIBUTES.get(key, key)))
                  for key in self.CONFIG}
        config["name"] = self.name
        return config

    @classmethod
    def from_config(cls, config):
        config = {key: keras.saving.deserialize_keras_object(value)
                  if isinstance(value, dict) and "class_name" in value else value
                  for key, value in config.items()}
        return cls(**config)

    def config_at_output_stride(self, output_stride):
        """This model's config with its backbone rebuilt (untrained) at `output_stride`."""
        backbone = self.backbone
        rebuilt = type(backbone).from_config(backbone.config_at_output_stride(output_stride))
        return dict(self.get_config(), backbone=rebuilt)

    def with_output_stride(self, output_stride):
        """The same model, same weights (copied by layer name), at another output stride."""
        rebuilt = type(self).from_config(self.config_at_output_stride(output_stride))
        try:
            copy_weights_by_name(self, rebuilt)
        except ValueError as e:  # e.g. a decoder whose stride-4 tap moves at output stride 4
            raise ValueError(f"output_stride: {self.name}'s weights do not fit it at output "
                             f"stride {output_stride} ({e})") from None
        return rebuilt


class Backbone(ConfigModel):
    """An encoder that heads compose with (see the module docstring for the contract)."""

    def __init__(self, inputs, outputs, pyramid_outputs, output_stride, dtype, **kwargs):
        if pyramid_outputs.get(output_stride) is not outputs:
            raise ValueError(f"pyramid_outputs: must hold the output at output stride {output_stride}")
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.output_stride = output_stride
        self.layer_dtype = dtype
        self.pyramid_outputs = dict(sorted(pyramid_outputs.items()))
        for layer in self.layers:
            if not isinstance(layer, keras.layers.InputLayer) and not hasattr(layer, "section"):
                layer.section = "backbone"

    @classmethod
    def reachable_output_strides(cls, **config):
        """Output strides the encoder built with `config` (constructor arguments) can run at."""
        raise NotImplementedError

    @property
    def num_features(self):
        return self.output.shape[-1]

    def config_at_output_stride(self, output_stride):
        check_output_stride(self.name, output_stride,
                            type(self).reachable_output_strides(**self.get_config()))
        return dict(self.get_config(), output_stride=output_stride)


def leaf_layers(model):
    """Every layer of `model`, nested models opened up: the one walk that matches layers by name."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def weighted_layers(model):
    """{name: layer} of every layer holding weights, nested models opened up."""
    return {layer.name: layer for layer in leaf_layers(model) if layer.weights}


def variable_pairs(source, layer):
    """(variable of `layer`, variable of the layer `source`) for every weight, matched by
    variable name, never by order; None unless both hold the same names and shapes."""
    variables = {v.name: v for v in source.weights}
    pairs = [(variable, variables.get(variable.name)) for variable in layer.weights]
    if len(variables) != len(pairs) or any(
            match is None or tuple(match.shape) != tuple(variable.shape) for variable, match in pairs):
        return None
    return pairs


def copy_weights_by_name(source, target):
    """Assigns every weight of `target` from the layer and variable of the same names in `source`.

    Both must hold the same layers and shapes (a rebuild of one architecture);
    a ValueError names the first difference, before anything is assigned.
    """
    held, wanted = weighted_layers(source), weighted_layers(target)
    if set(held) != set(wanted):
        name = sorted(set(held) ^ set(wanted))[0]
        raise ValueError(f"copy by name: layer {name} is in only one of {source.name}, {target.name}")
    pairs = []
    for name, layer in wanted.items():
        matched = variable_pairs(held[name], layer)
        if matched is None:
            raise ValueError(f"copy by name: {name}'s variables differ between {source.name} and "
                             f"{target.name}")
        pairs += matched
    for variable, match in pairs:
        variable.assign(match)
