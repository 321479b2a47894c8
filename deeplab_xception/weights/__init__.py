"""Pretrained weights: official checkpoint names, the model zoo, and `load_model`."""

from deeplab_xception.weights.checkpoint import OfficialCheckpoint, find_checkpoint
from deeplab_xception.weights.loading import load_model
from deeplab_xception.weights.official import official_variables
from deeplab_xception.weights.zoo import PRETRAINED, ZOO, Pretrained, PublishedResult
