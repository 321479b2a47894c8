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
    blocks: tuple
    module: str          # "modified" (DeepLab) or "classic" (Chollet, max pooling)
    decoder_tap: str = None  # layer whose BN output is the stride-4 feature map


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

_TAP = "entry_flow/{}/unit_1/xception_module/separable_conv2_pointwise"

VARIANTS = {
    # Chollet's ImageNet Xception, layer for layer keras.applications.Xception.
    "xception": VariantSpec(
        module="classic",
        blocks=(
            BlockSpec("entry_flow/block1", (128, 128), "conv", 2),
            BlockSpec("entry_flow/block2", (256, 256), "conv", 2),
            BlockSpec("entry_flow/block3", (728, 728), "conv", 2),
            BlockSpec("middle_flow/block1", (728, 728, 728), "sum", 1, num_units=8),
            BlockSpec("exit_flow/block1", (728, 1024), "conv", 2),
            BlockSpec("exit_flow/block2", (1536, 2048), "none", 1, activation_inside=True),
        ),
    ),
    "xception_41": VariantSpec(
        module="modified", blocks=_modified_blocks(_ENTRY_41_65, 8),
        decoder_tap=_TAP.format("block2")),
    "xception_65": VariantSpec(
        module="modified", blocks=_modified_blocks(_ENTRY_41_65, 16),
        decoder_tap=_TAP.format("block2")),
    "xception_71": VariantSpec(
        module="modified", blocks=_modified_blocks(_ENTRY_71, 16),
        decoder_tap=_TAP.format("block3")),
    # Not a published model: xception_41's layout at about 1/12 of the width and
    # 2 middle units, so tests and the embedded demo train in seconds on a CPU.
    "xception_tiny": VariantSpec(
        module="modified",
        blocks=(
            BlockSpec("entry_flow/block1", (16, 16, 16), "conv", 2),
            BlockSpec("entry_flow/block2", (32, 32, 32), "conv", 2),
            BlockSpec("entry_flow/block3", (64, 64, 64), "conv", 2),
            BlockSpec("middle_flow/block1", (64, 64, 64), "sum", 1, num_units=2),
            BlockSpec("exit_flow/block1", (64, 96, 96), "conv", 2),
            BlockSpec("exit_flow/block2", (128, 128, 160), "none", 1, activation_inside=True),
        ),
        decoder_tap=_TAP.format("block2")),
}

DEPTHWISE_LAYOUTS = ("checkpoint", "paper", "plain")
