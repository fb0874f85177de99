"""The README stays true: CI runs its test command, and its layer-table section covers every type and field."""

from __future__ import annotations

import re
from pathlib import Path

from neuralpower.layers import AXIS_PAIRS, FIELDS, LAYER_TYPES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_layer_type_and_column() -> None:
    table = README.split("## Layer tables", 1)[1].split("\n## ", 1)[0]
    for name in LAYER_TYPES:
        assert f"`{name}`" in table, name
    axis_fields = {f for pair in AXIS_PAIRS.values() for f in pair}
    for name in FIELDS:
        if name in axis_fields:
            continue
        assert f"`{name}`" in table, name
    for name in AXIS_PAIRS:
        assert f"`{name}`" in table, name
