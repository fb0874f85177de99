"""Fixtures shared by test modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_docs import varying_model_doc

from neuralpower.layers import LAYER_TYPES


@pytest.fixture(scope="session")
def varying_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file of every layer type whose runtime and power vary with the layer (model_docs.varying_model_doc)."""
    path = tmp_path_factory.mktemp("m") / "model.json"
    path.write_text(json.dumps(varying_model_doc(list(LAYER_TYPES))))
    return path
