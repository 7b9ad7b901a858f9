"""The local provider's namespace isolation: each instance has its own /opt/ml.

These tests need root and a working ``unshare --mount --pid``; elsewhere they are skipped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spotrun.control.clock import RealClock
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    Pool,
    TerminationCause,
    Workload,
)
from spotrun.providers.local import LocalProvider
from spotrun.providers.local._isolation import namespaces_work

needs_namespaces = pytest.mark.skipif(
    not namespaces_work(), reason="needs root and a working unshare"
)


class OneZoneMarket:
    notice_lead_real = 2.0

    def pools(self, instance_type: str, spot: bool) -> list[Pool]:
        return [Pool("local", "m5.large", "z1")]

    def price(self, pool: Pool, spot: bool, t_real: float) -> float:
        return 0.05

    def capacity(self, pool: Pool, t_real: float) -> int:
        return 8

    def reclaim_at(self, pool: Pool, launched_at: float, seq: int) -> float | None:
        return None


# Writes through the literal path scripts hard-code, waits so both instances overlap, then
# reports what it sees there.
WRITER = """\
import json, os, time
os.makedirs('/opt/ml/checkpoints', exist_ok=True)
with open('/opt/ml/checkpoints/x.txt', 'w') as f:
    f.write(os.environ['SPOTRUN_INSTANCE_ID'])
time.sleep(1.0)
seen = {n: open('/opt/ml/checkpoints/' + n).read() for n in os.listdir('/opt/ml/checkpoints')}
with open('/opt/ml/seen.json', 'w') as f:
    json.dump(seen, f)
"""


@pytest.fixture
def namespaced(tmp_path: Path) -> Iterator[LocalProvider]:
    p = LocalProvider(tmp_path / "home", OneZoneMarket(), RealClock(), isolation="namespace")
    yield p
    for state in p.list():
        p.terminate(state.ref)


def test_capabilities_follow_isolation(tmp_path: Path) -> None:
    folder = LocalProvider(tmp_path, OneZoneMarket(), RealClock(), isolation="folder")
    assert folder.isolation == "folder"
    assert folder.capabilities == {
        Capability.NOTICES,
        Capability.SURVIVES_SERVICE,
        Capability.MARKET_REPLAY,
    }
    auto = LocalProvider(tmp_path, OneZoneMarket(), RealClock())
    assert (Capability.PRIVATE_MOUNTS in auto.capabilities) == namespaces_work()
    with pytest.raises(ValueError, match="isolation must be one of"):
        LocalProvider(tmp_path, OneZoneMarket(), RealClock(), isolation="docker")


@needs_namespaces
def test_each_instance_has_its_own_opt_ml(tmp_path: Path, namespaced: LocalProvider) -> None:
    (tmp_path / "writer.py").write_text(WRITER)
    argv = (sys.executable, str(tmp_path / "writer.py"))
    req = CapacityRequest("job-1", 1, "ml.m5.large", 1, False, Workload(argv))
    # Two separate launches: two independent instances writing the same path at once.
    refs = [namespaced.launch(namespaced.plan(req))[0] for _ in range(2)]
    deadline = time.monotonic() + 10
    while any(namespaced.describe(r).phase is not InstancePhase.TERMINATED for r in refs):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "workloads did not finish"
        time.sleep(0.05)
    for ref in refs:
        state = namespaced.describe(ref)
        assert state is not None and state.isolation == "namespace"
        assert state.cause is TerminationCause.EXITED
        ml = namespaced.root(ref) / "ml"
        assert (ml / "checkpoints" / "x.txt").read_text() == ref.id
        assert json.loads((ml / "seen.json").read_text()) == {"x.txt": ref.id}
    outside = Path("/opt/ml/checkpoints/x.txt")
    assert not (outside.exists() and outside.read_text() in {r.id for r in refs})
