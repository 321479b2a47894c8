"""The budget as a bar chart: multiply-adds, and measured time when present, per output stride."""

import os

from deeplab_xception.errors import UserError
from deeplab_xception.io import atomic_path


def plot_format(path):
    """The image format matplotlib writes for `path`'s extension (checked before any counting)."""
    from matplotlib.figure import Figure

    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    if extension not in Figure().canvas.get_supported_filetypes():
        raise UserError(f"{path}: cannot write a plot with extension {extension!r}")
    return extension


def plot_budget(rows, path):
    """Bar chart of multiply-adds (and measured time, when present) per eval output stride."""
    from matplotlib.figure import Figure

    extension = plot_format(path)
    figure = Figure()
    measured = all(row.seconds is not None for row in rows)
    axes = figure.subplots(1, 2 if measured else 1, squeeze=False)[0]
    labels = [f"OS {row.eval_output_stride}" for row in rows]
    axes[0].bar(labels, [row.multiply_adds / 1e9 for row in rows])
    axes[0].set_ylabel("multiply-adds (billions)")
    if measured:
        axes[1].bar(labels, [row.seconds for row in rows], color="tab:orange")
        axes[1].set_ylabel("seconds per image")
    first = rows[0]
    figure.suptitle(f"{first.backbone} {first.kind}, {first.input_size[0]}x{first.input_size[1]}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=extension)
