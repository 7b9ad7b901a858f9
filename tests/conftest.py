"""Shared fixtures: a store in a temporary home on each database engine, a virtual clock,
a fake provider.

``store`` (and anything asking for ``engine``) runs once per engine: SQLite, and a real
PostgreSQL (``postgres.py``: one server per session, a fresh database per test). A module
may narrow that with ``pytestmark = pytest.mark.engines("sqlite")``. Without PostgreSQL the
``postgresql`` tests skip, except under ``CI=true``, where they fail. ``slurm_cluster`` is a
real Slurm cluster (``slurm.py``: one per session), and skips or fails the same way.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import postgres
import slurm
from spotrun.control.clock import VirtualClock
from spotrun.providers import Pool
from spotrun.store import Store

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): the database engines a test runs on (default: all)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("engines")
        engines = marker.args if marker is not None else ENGINES
        metafunc.parametrize("engine", engines, indirect=True)


def require(why: str | None, what: str, hint: str) -> None:
    """Skip the tests of a service this machine lacks (``why`` it is missing), but fail
    them under CI=true, which installs every service the tests need."""
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why}: the {what} tests need it under CI=true; {hint}", pytrace=False)
    pytest.skip(f"{why} ({hint})")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """The session's PostgreSQL server, started on first use."""
    require(postgres.missing(), "postgresql", postgres.INSTALL_HINT)
    server = postgres.PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[slurm.SlurmCluster]:
    """The session's Slurm cluster, brought up on first use."""
    require(slurm.missing(), "Slurm", slurm.INSTALL_HINT)
    with slurm.SlurmCluster() as cluster:
        yield cluster


def new_database(request: pytest.FixtureRequest, engine: str) -> str | None:
    """A fresh, migrated database on ``engine`` for the requesting fixture, dropped after it
    (None for SQLite: the home's own file)."""
    if engine == "sqlite":
        return None
    assert engine == "postgresql", engine
    server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
    url = server.database()
    request.addfinalizer(lambda: server.drop(url))
    return url


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(request: pytest.FixtureRequest, engine: str) -> str | None:
    """The URL of a fresh database on the test's engine (None: SQLite in the home)."""
    return new_database(request, engine)


@pytest.fixture
def store(tmp_path: Path, database: str | None) -> Iterator[Store]:
    s = Store.open(tmp_path / "home", database)
    yield s
    s.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(1_700_000_000.0)


class FlatPrices:
    """A price model with one spot and one on-demand price per pool (USD/h)."""

    def __init__(self, spot: dict[Pool, float], on_demand: float) -> None:
        self.spot = spot
        self.od = on_demand

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float:
        price = self.spot[pool] if spot else self.od
        return price * (end - start) / 3600.0

    def on_demand_price(self, instance_type: str) -> float:
        return self.od


def request(name: str = "job-1", **over: Any) -> dict[str, Any]:
    """A valid spot CreateTrainingJob request; ``over`` replaces top-level members."""
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": "/tmp/code",
            "EntryPoint": "train.py",
        },
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
        "ResourceConfig": {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": "file:///tmp/ckpt"},
    }
    req.update(over)
    return req


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto S3 server on 127.0.0.1 and the variables that point clients at it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # admission in this process reads S3 too
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"])
        client.create_bucket(Bucket="sdk-bucket")
        yield env
    finally:
        server.stop()
