"""Fixtures shared by test modules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_docs import varying_model_doc

from neuralpower.bench.interference import CpuLoad
from neuralpower.layers import LAYER_TYPES


@pytest.fixture(autouse=True)
def quiet_machine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees a quiet machine: the other work of a busy CI machine is not what a test checks, and it
    would flag rows as interference at random. The interference checks plant their own disturbance (see
    tests/test_interference.py); tests marked ``machine_load`` read the machine's real load."""
    if request.node.get_closest_marker("machine_load") is None:
        monkeypatch.setattr(CpuLoad, "others", lambda self, start, end=None: 0.0)


@pytest.fixture(scope="session")
def varying_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file of every layer type whose runtime and power vary with the layer (model_docs.varying_model_doc)."""
    path = tmp_path_factory.mktemp("m") / "model.json"
    path.write_text(json.dumps(varying_model_doc(list(LAYER_TYPES))))
    return path
