"""What several test files need: models with random but well-conditioned weights."""

import numpy as np


def randomize_weights(model, seed=0, scale=0.1):
    """Normal(0, scale) everywhere, batch-norm variances 1 + |normal| (never near zero)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(0.0, scale, w.shape)
        if "variance" in w.path:
            value = 1.0 + np.abs(value)
        w.assign(value.astype("float32"))
