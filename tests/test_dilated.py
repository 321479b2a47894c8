"""Dilated depthwise convs on tensors rearranged once per run of layers compute what the
model computes, with fewer space-to-batch copies than one per conv."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.models.dilated import shared_rate, with_shared_space_to_batch
from deeplab_xception.runtime.compiled import compiled_call
from helpers import randomize_weights


def _copies(graph):
    """Space-to-batch ops in `graph` that rearrange features (not a one-channel mask)."""
    return sum(op.type == "SpaceToBatchND" and op.outputs[0].shape[-1] != 1
               for op in graph.get_operations())


def _traced(model):
    spec = tf.TensorSpec((None, None, None, 3))
    return tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph


@pytest.fixture(scope="module")
def os8_model():
    model = build_model("deeplab", backbone="xception_tiny", num_classes=4, output_stride=8)
    randomize_weights(model, seed=3, scale=0.4)  # logits vary over the image (std ~0.7)
    return model


# 37 x 45 at OS 8 is 5 x 6: not a multiple of rate 2 or 4, so positions outside the image
# are masked; 64 x 64 is 8 x 8: every position inside.
@pytest.mark.parametrize("size", [(37, 45), (64, 64)])
def test_shared_space_to_batch_computes_what_the_model_computes(os8_model, size):
    rewritten = with_shared_space_to_batch(os8_model)
    images = np.random.default_rng(4).uniform(-1, 1, (2, *size, 3)).astype("float32")
    want = np.asarray(os8_model(images, training=False))
    assert want.std(axis=(1, 2)).mean() > 0.1
    np.testing.assert_allclose(rewritten(images, training=False), want, rtol=1e-5, atol=1e-5)
    dilated = sum(shared_rate(layer) is not None for layer in os8_model.layers)
    assert _copies(_traced(os8_model)) == dilated == 15
    # rate 2 (entered twice: the unit's input and its residual), rate 4, and one per ASPP rate
    assert _copies(_traced(rewritten)) == 2 + 1 + 3


def test_compiled_float32_inference_shares_space_to_batch(os8_model):
    images = np.random.default_rng(5).uniform(-1, 1, (1, 37, 45, 3)).astype("float32")
    call = compiled_call(os8_model, "float32", fold_after_pixels=0, freeze_after_pixels=0)
    np.testing.assert_allclose(call(images), os8_model(images, training=False), rtol=1e-5,
                               atol=1e-5)
    assert _copies(call.frozen.function.graph) == 6
