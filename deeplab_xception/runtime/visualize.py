"""Label maps for people: palette PNGs, class fractions, and overlays with a legend."""

import cv2
import numpy as np
from PIL import Image

from deeplab_xception.io import atomic_path

LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_DISPLAY_SIZE = 256  # overlays are enlarged until their longer side reaches this


def write_label_png(path, labels, palette):
    """Writes uint8 class indices as an indexed (mode P) PNG whose colors are `palette` (K x 3)."""
    image = Image.fromarray(np.asarray(labels, np.uint8))
    image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def class_fractions(labels, num_classes):
    """[(class, fraction of pixels)] of the classes present, most frequent first."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=num_classes)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(c), counts[c] / labels.size) for c in order]


def colorize(labels, palette):
    """RGB H x W x 3: each pixel in its class color."""
    return np.asarray(palette, np.uint8)[labels]


def blend(image, labels, palette, alpha):
    """The class colors laid over an RGB image with opacity `alpha`."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels, palette)
    return np.rint(mixed).astype(np.uint8)


def percent(share):
    return f"{100 * share:.1f}%" if share >= 0.0005 else "<0.1%"


def enlarge_for_display(image):
    """Pixel-replicates images under MIN_DISPLAY_SIZE by a whole factor so they stay legible."""
    factor = max(1, -(-MIN_DISPLAY_SIZE // max(image.shape[:2])))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def overlay(image, labels, palette, names, alpha=0.5, legend=True):
    """`blend` of the image (enlarged when small), with a legend of the classes present
    (color, name, share) in its top-left corner, on a light box: its rows scale with the
    image (a 40th of its longer side) and shrink to fit inside it, so the overlay keeps
    the image's size. `legend=False` leaves it out."""
    canvas = enlarge_for_display(blend(image, labels, palette, alpha))
    if not legend:
        return canvas
    height, width = canvas.shape[:2]
    rows = [(palette[c], f"{names[c]} {percent(share)}")
            for c, share in class_fractions(labels, len(names))]
    row = max(14, max(height, width) // 40)
    box = _legend_box(rows, row)
    if box[0] > width or box[1] > height:
        row = max(8, int(row * min(width / box[0], height / box[1])))
        box = _legend_box(rows, row)
    region = canvas[:min(box[1], height), :min(box[0], width)]
    region[:] = np.rint(0.25 * region + 0.75 * np.array(LEGEND_BACKGROUND)).astype(np.uint8)
    scale, thickness, margin = _legend_font(row)
    for i, (color, text) in enumerate(rows):
        top, left = margin + i * row, margin
        swatch = (left + row - margin - 1, top + row - margin - 1)
        cv2.rectangle(canvas, (left, top), swatch, tuple(int(v) for v in color), cv2.FILLED)
        cv2.rectangle(canvas, (left, top), swatch, LEGEND_TEXT, max(1, thickness // 2))
        baseline = top + (row - margin + cv2.getTextSize(text, FONT, scale, thickness)[0][1]) // 2
        cv2.putText(canvas, text, (swatch[0] + margin + 1, baseline), FONT, scale, LEGEND_TEXT,
                    thickness, cv2.LINE_AA)
    return canvas


def _legend_font(row):
    """(font scale, stroke thickness, margin) for legend rows `row` pixels tall."""
    return 0.5 * row / 22, max(1, row // 18), row // 3  # Hershey caps: ~22 px at scale 1


def _legend_box(rows, row):
    """(width, height) of the legend of `rows` at `row` pixels a row."""
    scale, thickness, margin = _legend_font(row)
    text_width = max(cv2.getTextSize(text, FONT, scale, thickness)[0][0] for _, text in rows)
    return 3 * margin + (row - margin) + text_width, len(rows) * row + margin
