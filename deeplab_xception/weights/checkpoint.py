"""Official TF1 name-based checkpoints: finding one, telling what it holds, loading it into a model."""

import glob
import os

from deeplab_xception.backend import import_tensorflow
from deeplab_xception.errors import UserError
from deeplab_xception.weights.official import (
    BACKBONE, OFFICIAL_SCOPES, SCOPE_VARIANTS, backbone_of, official_scope, official_variables,
    part_of)

# Training bookkeeping that released checkpoints carry beside the model's variables.
BOOKKEEPING = ("global_step", "beta1_power", "beta2_power")
OPTIMIZER_SLOTS = ("Momentum", "RMSProp", "RMSProp_1", "Adam", "Adam_1", "ExponentialMovingAverage")


def _tensorflow(path):
    """TensorFlow, which reads TF checkpoints; a UserError naming `path` where it is missing
    (a JAX-only machine): convert the checkpoint once where TensorFlow is installed."""
    try:
        return import_tensorflow()
    except ImportError:
        raise UserError(f"{path}: reading an official TF checkpoint needs TensorFlow, which is not "
                        "installed; convert it once where it is (deeplab-xception convert "
                        f"{path} model.keras) and use the .keras file") from None


def find_checkpoint(path):
    """The prefix of the checkpoint at `path`: a prefix, one of its files, or a directory holding one."""
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = _tensorflow(path).train.latest_checkpoint(path)
        if latest:
            return latest
        indexes = sorted(glob.glob(os.path.join(glob.escape(path), "**", "*.index"), recursive=True))
        if len(indexes) != 1:
            found = "no checkpoint" if not indexes else f"{len(indexes)} checkpoints; name one"
            raise UserError(f"{path}: directory holds {found}")
        return indexes[0][: -len(".index")]
    for suffix in (".index", ".meta"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if ".data-" in os.path.basename(path):
        path = path[: path.rindex(".data-")]
    if not os.path.isfile(path + ".index"):
        raise UserError(f"{path}: no such checkpoint (expected {os.path.basename(path)}.index)")
    return path


def _is_model_variable(name):
    return name not in BOOKKEEPING and name.rsplit("/", 1)[-1] not in OPTIMIZER_SLOTS


class OfficialCheckpoint:
    """The model variables of a DeepLab / Xception TF1 checkpoint and what they imply.

    Everything a model needs to be built is read off names and shapes: the
    backbone scope, the classes of `logits/semantic` or `<scope>/logits`,
    whether a decoder and separable ASPP convs exist, and whether the
    depthwise convs have batch norm.
    """

    def __init__(self, path):
        self.path = find_checkpoint(path)
        tf = _tensorflow(self.path)
        try:
            self.reader = tf.train.load_checkpoint(self.path)
        except (tf.errors.OpError, ValueError) as e:
            raise UserError(f"{self.path}: not a readable TF checkpoint ({e.__class__.__name__})") from None
        self.shapes = {name: tuple(shape) for name, shape in
                       self.reader.get_variable_to_shape_map().items() if _is_model_variable(name)}
        scopes = sorted({name.split("/", 1)[0] for name in self.shapes} & set(OFFICIAL_SCOPES))
        if not scopes:
            raise UserError(f"{self.path}: not a DeepLab checkpoint (no variables under "
                            f"{', '.join(s + '/' for s in OFFICIAL_SCOPES)})")
        if len(scopes) > 1:
            raise UserError(f"{self.path}: holds several backbones ({', '.join(scopes)})")
        self.scope = scopes[0]
        self.variant = SCOPE_VARIANTS[self.scope]

    def num_classes(self, kind):
        """Classes of the logits of a `kind` model in the checkpoint, None when it has none."""
        name = {"deeplab": "logits/semantic/biases",
                "classifier": f"{self.scope}/logits/biases"}.get(kind)
        return self.shapes[name][0] if name in self.shapes else None

    @property
    def kind(self):
        """The model kind the checkpoint holds: "deeplab", "classifier" or "backbone"."""
        for kind in ("deeplab", "classifier"):
            if self.num_classes(kind) is not None:
                return kind
        return "backbone"

    def build_options(self, kind):
        """`build_model` arguments of the model this checkpoint holds, as far as `kind` needs them."""
        depthwise_bn = any(n.startswith(self.scope + "/") and "_depthwise/BatchNorm/" in n
                           for n in self.shapes)
        options = dict(backbone=self.variant, depthwise_layout="checkpoint" if depthwise_bn else "plain")
        if kind == "deeplab" and self.kind == "deeplab":
            options["decoder"] = any(n.startswith("decoder/") for n in self.shapes)
            options["separable"] = any(n.startswith("aspp") and "_depthwise/" in n for n in self.shapes)
        return options

    def load_into(self, model):
        """Assigns the variables of every part (backbone, classifier, head) the model shares with the checkpoint.

        Within those parts, every checkpoint variable must be used and every model
        weight found with an equal shape; nothing is assigned unless all are.
        Parts only the model has (the head of a model fine-tuned from an ImageNet
        backbone) keep their initial values; parts only the checkpoint has are skipped.
        """
        scope = official_scope(backbone_of(model))
        try:
            wanted = official_variables(model)
        except ValueError as e:
            raise UserError(f"{self.path}: {e}") from None
        shared = ({part_of(n, scope) for n in wanted} & {part_of(n, scope) for n in self.shapes})
        if BACKBONE not in shared:
            raise UserError(f"{self.path}: holds no {scope}/ variables (it holds {self.scope}/)")
        wanted = {n: v for n, v in wanted.items() if part_of(n, scope) in shared}
        held = {n for n in self.shapes if part_of(n, scope) in shared}
        for problem, names in (("lacks the model's variable", sorted(set(wanted) - held)),
                               ("has a variable the model lacks:", sorted(held - set(wanted)))):
            if names:
                more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
                raise UserError(f"{self.path}: checkpoint {problem} {names[0]}{more}")
        for name, variable in wanted.items():
            if self.shapes[name] != tuple(variable.shape):
                raise UserError(f"{self.path}: {name} has shape {list(self.shapes[name])}, "
                                f"the model needs {list(variable.shape)}")
        errors = _tensorflow(self.path).errors
        for name, variable in wanted.items():
            try:
                variable.assign(self.reader.get_tensor(name))
            except (errors.OpError, IndexError) as e:  # IndexError: a truncated .data file
                raise UserError(f"{self.path}: {name} cannot be read; the checkpoint's .data "
                                f"files are truncated or corrupt ({e.__class__.__name__})") from None
        return sorted(shared)
