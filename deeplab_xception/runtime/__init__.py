"""Running trained models: batch-norm folding (`folding`), the staged runtime (`compiled`),
`Segmenter` and its pixel limit, tiles, precision, the `segment` outputs, the multiply-add
budget and export."""
