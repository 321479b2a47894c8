"""The data floor: the one input contract (`preprocessing`), class lists and palettes, which files
each input pipeline reads (`files`), the one TFRecord writer (`examples`), and the files shipped
with the package (ImageNet class names, the official checkpoint manifest)."""
