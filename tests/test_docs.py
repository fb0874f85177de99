"""The README stays true: CI runs its test command, its layer-table section covers every type and field, and
every code block in it runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

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


# -- every code block of the README runs ------------------------------------------------------------------

_BLOCK = re.compile(r"^```([^\n`]*)\n(.*?)\n```$", flags=re.S | re.M)
_LANGUAGES = {"sh", "python", "text"}  # text: output, syntax or a layout, shown and not run
_BLOCKS = [(m.group(1).strip(), m.group(2), README[: m.start()].count("\n") + 1) for m in _BLOCK.finditer(README)]
# What CI does itself before it runs the tests: a block's install steps are checked against it, not repeated.
_INSTALL_STEPS = ("python3 -m venv .venv", ". .venv/bin/activate", "pip install")


def test_every_block_says_what_it_is() -> None:
    assert _BLOCKS
    for lang, _, line in _BLOCKS:
        assert lang in _LANGUAGES, f"README.md line {line}: a code block must be sh, python or text, not {lang!r}"


def _needs_gpu(body: str) -> bool:
    return bool(re.search(r"--executor (torch|cupy)\b", body))


def _have_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available()) and shutil.which("nvidia-smi") is not None
    except Exception:
        return False


def _commands(body: str) -> list[str]:
    """The commands of an sh block, each line one command, without the install steps CI has done."""
    out = []
    for line in body.splitlines():
        if not line.strip():
            continue
        steps = [step.strip() for step in line.split(" && ")]
        if "python -m pytest" in steps:
            continue  # the test command itself: test_ci_runs_the_readme_test_command checks it
        rest = [step for step in steps if not step.startswith(_INSTALL_STEPS)]
        if rest:
            out.append(" && ".join(rest))
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole README, as a reader who runs it top to bottom has: files a block writes are
    there for the next; the repository's examples, benchmarks, tests (their data) and data are linked in."""
    directory = tmp_path_factory.mktemp("readme")
    for name in ("examples", "benchmarks", "tests", "data"):
        (directory / name).symlink_to(ROOT / name)
    return directory


@pytest.mark.parametrize(
    ("lang", "body", "line"),
    [pytest.param(*b, id=f"line{b[2]}", marks=[pytest.mark.gpu] if _needs_gpu(b[1]) else []) for b in _BLOCKS],
)
def test_readme_block_runs(
    lang: str, body: str, line: int, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if lang == "text":
        return
    if _needs_gpu(body) and not _have_gpu():
        pytest.skip("needs an NVIDIA GPU")
    monkeypatch.chdir(workdir)
    if lang == "python":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch's exporter warns about its own deprecations
            exec(compile(body, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
        return
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    for command in _commands(body):
        proc = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"README.md line {line}: {command}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, f"README.md line {line}: {command}\n{proc.stderr[-2000:]}"


def test_readme_names_no_file_outside_the_repository() -> None:
    # A reader has the repository, not the folders beside it.
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target
