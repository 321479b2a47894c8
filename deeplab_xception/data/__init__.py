"""The data floor: the one input contract (`preprocessing`), class lists and palettes, and the
files shipped with the package (ImageNet class names, the official checkpoint manifest)."""
