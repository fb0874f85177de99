"""The Dask path: a Dask DataFrame scored partition by partition on a local two-worker cluster gives what
`neuralpower score` writes for the same rows."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import neuralpower as npw
from neuralpower import InputError, zoo
from neuralpower.cli import main

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from neuralpower.dask import score_dataframe  # noqa: E402 (needs dask)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client() -> object:
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 example candidates with an error column, as a folder of five Parquet files cut inside architectures."""
    table = pacsv.read_csv(ROOT / "examples" / "candidates.csv.gz")
    keep = sorted(set(table.column("arch").to_pylist()))[:200]
    table = table.filter(pa.compute.is_in(table.column("arch"), pa.array(keep)))
    rng = np.random.default_rng(2)
    error = dict(zip(keep, rng.uniform(0.2, 0.4, len(keep)), strict=True))
    table = table.append_column("error", pa.array([error[a] for a in table.column("arch").to_pylist()]))
    folder = tmp_path_factory.mktemp("layers") / "in"
    folder.mkdir()
    n = table.num_rows
    cuts = [0, 3, n // 4 + 5, n // 2 + 11, 3 * n // 4 + 2, n]  # inside architectures
    for k, (a, b) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(table.slice(a, b - a), folder / f"p{k}.parquet")
    return folder


def test_the_same_scores_as_the_score_verb(
    client: object, varying_model_path: Path, layers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = npw.load_model(varying_model_path)
    frame = dd.read_parquet(sorted(str(p) for p in layers.glob("*.parquet")))
    assert frame.npartitions >= 4
    got = score_dataframe(model, frame)
    out = tmp_path / "s.parquet"
    assert main(["score", str(layers), "--model", str(varying_model_path), "--out", str(out)]) == 0
    capsys.readouterr()
    want = pq.read_table(out).to_pandas()
    assert list(got.columns) == list(want.columns)
    assert got["arch"].tolist() == want["arch"].tolist()
    assert got["bottleneck"].tolist() == want["bottleneck"].tolist()
    assert got["layers"].tolist() == want["layers"].tolist()
    assert got["rank"].tolist() == want["rank"].tolist()
    for col in ("runtime_ms", "power_w", "energy_mj", "epr", "error"):
        assert np.allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-12), col
    front = score_dataframe(model, frame, pareto=True)
    assert 0 < len(front) < len(got) and set(front["arch"]) <= set(got["arch"])


def test_a_bad_row_names_its_partition(client: object, varying_model_path: Path, layers: Path) -> None:
    model = npw.load_model(varying_model_path)
    table = pq.read_table(layers / "p1.parquet")
    channels = table.column("in_channels").to_pylist()
    channels[10] = -1
    bad = table.set_column(table.column_names.index("in_channels"), "in_channels", pa.array(channels))
    frame = dd.from_pandas(pa.concat_tables([pq.read_table(layers / "p0.parquet"), bad]).to_pandas(), npartitions=2)
    with pytest.raises(InputError, match=r"partition \d, row \d+, column in_channels"):
        score_dataframe(model, frame)


def test_models_pickle_by_their_document(varying_model_path: Path) -> None:
    model = npw.load_model(varying_model_path)
    again = pickle.loads(pickle.dumps(model))
    arch = zoo.build("resnet18")
    assert again.name == model.name and again.doc == model.doc
    assert again.predict(arch).energy_mj == model.predict(arch).energy_mj
