"""Running trained models: batch-norm folding and the staged runtime (`compiled`), tiles,
precision, the `segment` outputs, the multiply-add budget and export."""
