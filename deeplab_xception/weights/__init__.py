"""Pretrained weights: official checkpoint names, the model zoo, `load_model`, and copying by layer name."""

from deeplab_xception.weights.checkpoint import OfficialCheckpoint, find_checkpoint
from deeplab_xception.weights.loading import load_model
from deeplab_xception.weights.official import official_variables
from deeplab_xception.weights.transfer import copy_matching_weights, load_matching_weights
from deeplab_xception.weights.zoo import PRETRAINED, ZOO, Pretrained, PublishedResult
