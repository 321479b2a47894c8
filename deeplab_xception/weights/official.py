"""Official TF-slim variable names of a built model, derived from its Keras layer names.

An official name is the backbone scope (`xception_65/`) for backbone and
classifier layers, nothing for the DeepLab head; then the Keras layer name with
'/' for '.'; then a suffix per (layer class, Keras variable). Batch norm layers
are already named `<conv>.BatchNorm`. Nothing is listed per variable, so the
mapping holds for every variant, output stride and head option.
"""

from keras import layers

from deeplab_xception.models.backbones import VARIANTS, Backbone
from deeplab_xception.models.deeplab import DeepLabV3Plus

SUFFIXES = {
    (layers.Conv2D, "kernel"): "weights",
    (layers.Conv2D, "bias"): "biases",
    (layers.DepthwiseConv2D, "kernel"): "depthwise_weights",
    (layers.BatchNormalization, "gamma"): "gamma",
    (layers.BatchNormalization, "beta"): "beta",
    (layers.BatchNormalization, "moving_mean"): "moving_mean",
    (layers.BatchNormalization, "moving_variance"): "moving_variance",
}

# What a checkpoint variable belongs to; a model loads the parts it shares with a checkpoint.
BACKBONE, CLASSIFIER, HEAD = "backbone", "classifier", "segmentation head"

# Official scope: the variant whose layers carry its names.
SCOPE_VARIANTS = {spec.official_scope: name for name, spec in VARIANTS.items() if spec.official_scope}
OFFICIAL_SCOPES = tuple(SCOPE_VARIANTS)


def backbone_of(model):
    return model if isinstance(model, Backbone) else model.backbone


def official_scope(backbone):
    """The checkpoint scope of `backbone`'s variables, None when official checkpoints have none."""
    spec = getattr(backbone, "spec", None)
    return spec.official_scope if spec is not None else None


def part_of(name, scope):
    """BACKBONE, CLASSIFIER (`<scope>/logits/...`) or HEAD (no scope) for an official name."""
    if not name.startswith(scope + "/"):
        return HEAD
    return CLASSIFIER if name.startswith(scope + "/logits/") else BACKBONE


def official_variables(model):
    """{official name: Keras variable} for every weight of a backbone, classifier or DeepLabV3Plus."""
    backbone = backbone_of(model)
    scope = official_scope(backbone)
    if scope is None:
        raise ValueError(f"{backbone.name} has no official TF-slim names; "
                         f"official checkpoints exist for {', '.join(OFFICIAL_SCOPES)}")
    scoped = {id(layer) for layer in backbone.layers}
    names = {}
    for layer in model.layers:
        in_scope = not isinstance(model, DeepLabV3Plus) or id(layer) in scoped
        prefix = scope + "/" if in_scope else ""
        for variable in layer.weights:
            suffix = SUFFIXES.get((type(layer), variable.name))
            if suffix is None:
                raise ValueError(f"{layer.name}: no official name for {type(layer).__name__} "
                                 f"variable {variable.name!r}")
            names[prefix + layer.name.replace(".", "/") + "/" + suffix] = variable
    return names
