"""Every Xception variant the package builds, as data.

A variant is a stem plus a list of blocks; each block repeats one Xception
unit. The builder in `xception.py` walks these rows, so a new variant is a new
table entry, never new code.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    scope: str                   # official scope, e.g. "entry_flow/block1"
    depths: tuple                # filters of each separable conv in the unit
    skip: str                    # "conv" (1x1 projection), "sum" (identity) or "none"
    stride: int                  # stride of the unit (on its last conv or pooling)
    num_units: int = 1
    activation_inside: bool = False  # BN+ReLU inside each separable conv, no leading ReLU


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """Everything that tells one Xception family from the other, as data.

    The builder, the classifier, the budget and the checkpoint names read these
    fields; nothing outside `backbones/` compares variant names.
    """
    blocks: tuple
    unit_family: str = "modified"   # "modified": DeepLab's units; "classic": Chollet's, max pooling
    naming: str = "official"        # "official" scopes or "keras_applications" layer names
    classifier_head: str = "conv_logits"  # "conv_logits" (slim's 1x1 conv) or "dense" (keras)
    imagenet_classes: int = 1001    # slim's 1001 (background at 0) or keras's 1000
    official_scope: str = None      # variable scope of the official checkpoints, if any
    output_strides: tuple = None    # strides it runs at; None: every one its units reach


def _modified_blocks(entry, middle_units):
    return entry + (
        BlockSpec("middle_flow/block1", (728, 728, 728), "sum", 1, num_units=middle_units),
        BlockSpec("exit_flow/block1", (728, 1024, 1024), "conv", 2),
        BlockSpec("exit_flow/block2", (1536, 1536, 2048), "none", 1, activation_inside=True),
    )


_ENTRY_41_65 = (
    BlockSpec("entry_flow/block1", (128, 128, 128), "conv", 2),
    BlockSpec("entry_flow/block2", (256, 256, 256), "conv", 2),
    BlockSpec("entry_flow/block3", (728, 728, 728), "conv", 2),
)

_ENTRY_71 = (
    BlockSpec("entry_flow/block1", (128, 128, 128), "conv", 2),
    BlockSpec("entry_flow/block2", (256, 256, 256), "conv", 1),
    BlockSpec("entry_flow/block3", (256, 256, 256), "conv", 2),
    BlockSpec("entry_flow/block4", (728, 728, 728), "conv", 1),
    BlockSpec("entry_flow/block5", (728, 728, 728), "conv", 2),
)

VARIANTS = {
    # Chollet's ImageNet Xception, layer for layer keras.applications.Xception.
    "xception": VariantSpec(
        unit_family="classic", naming="keras_applications", classifier_head="dense",
        imagenet_classes=1000, output_strides=(32,),
        blocks=(
            BlockSpec("entry_flow/block1", (128, 128), "conv", 2),
            BlockSpec("entry_flow/block2", (256, 256), "conv", 2),
            BlockSpec("entry_flow/block3", (728, 728), "conv", 2),
            BlockSpec("middle_flow/block1", (728, 728, 728), "sum", 1, num_units=8),
            BlockSpec("exit_flow/block1", (728, 1024), "conv", 2),
            BlockSpec("exit_flow/block2", (1536, 2048), "none", 1, activation_inside=True),
        ),
    ),
    "xception_41": VariantSpec(_modified_blocks(_ENTRY_41_65, 8), official_scope="xception_41"),
    "xception_65": VariantSpec(_modified_blocks(_ENTRY_41_65, 16), official_scope="xception_65"),
    "xception_71": VariantSpec(_modified_blocks(_ENTRY_71, 16), official_scope="xception_71"),
    # Not a published model: xception_41's layout at about 1/12 of the width and
    # 2 middle units, so tests and the embedded demo train in seconds on a CPU.
    "xception_tiny": VariantSpec(
        official_scope="xception_tiny",
        blocks=(
            BlockSpec("entry_flow/block1", (16, 16, 16), "conv", 2),
            BlockSpec("entry_flow/block2", (32, 32, 32), "conv", 2),
            BlockSpec("entry_flow/block3", (64, 64, 64), "conv", 2),
            BlockSpec("middle_flow/block1", (64, 64, 64), "sum", 1, num_units=2),
            BlockSpec("exit_flow/block1", (64, 96, 96), "conv", 2),
            BlockSpec("exit_flow/block2", (128, 128, 160), "none", 1, activation_inside=True),
        )),
}

DEPTHWISE_LAYOUTS = ("checkpoint", "paper", "plain")

# The variant whose layers load Keras Xception weights files (.h5) layer for layer.
KERAS_APPLICATIONS_VARIANT = next(name for name, spec in VARIANTS.items()
                                  if spec.naming == "keras_applications")
