"""Shared fixtures: a store in a temporary home, a virtual clock, a fake provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotrun.control.clock import VirtualClock
from spotrun.providers import Pool
from spotrun.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "home")
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
