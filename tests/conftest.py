import json
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds full-size models or runs subprocess clusters")


@pytest.fixture(scope="session")
def manifest():
    """The official xception_65 DeepLabv3+ variable list."""
    path = REPO / "deeplab_xception" / "data" / "xception65_deeplabv3plus_variables.json"
    return json.loads(path.read_text())
