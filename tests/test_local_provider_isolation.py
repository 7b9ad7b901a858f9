"""The local provider's namespace isolation: each instance has its own /opt/ml.

Namespaces are expected wherever they can be had: as root, with ``unshare`` and ``mount``
installed (what CI installs). There, a probe that says no, or an instance that fell back to
folder isolation, is a failure, not a skip: a silent fallback would let every test pass
while no instance gets the /opt/ml that scripts hard-code. ``SPOTRUN_TEST_NO_NAMESPACES=1``
says that this machine forbids them although it looks able to (a container without
CAP_SYS_ADMIN); without root or the tools the namespace tests are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from events import wait_until
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


def namespaces_expected() -> bool:
    """Whether instances on this machine must get a private mount namespace."""
    if os.environ.get("SPOTRUN_TEST_NO_NAMESPACES") == "1":
        return False
    return os.geteuid() == 0 and bool(shutil.which("unshare") and shutil.which("mount"))


def expected_isolation() -> str:
    """The isolation every instance here must report: ``namespace`` where expected."""
    if not namespaces_expected():
        return "folder"
    assert namespaces_work(), (
        "root, unshare and mount are here, yet a private mount namespace cannot be made "
        "(see spotrun.providers.local._isolation.namespaces_work); if this machine forbids "
        "them, say so with SPOTRUN_TEST_NO_NAMESPACES=1"
    )
    return "namespace"


needs_namespaces = pytest.mark.skipif(
    not namespaces_expected(),
    reason="namespaces need root, unshare and mount (or SPOTRUN_TEST_NO_NAMESPACES=1 is set)",
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


# Writes through the literal path scripts hard-code, waits until every instance has written
# (a meeting point outside /opt/ml, given as argv[1]: both surely overlap), then reports
# what it sees there.
WRITER = """\
import json, os, sys, time
os.makedirs('/opt/ml/checkpoints', exist_ok=True)
with open('/opt/ml/checkpoints/x.txt', 'w') as f:
    f.write(os.environ['SPOTRUN_INSTANCE_ID'])
meet = sys.argv[1]
open(os.path.join(meet, os.environ['SPOTRUN_INSTANCE_ID']), 'w').close()
give_up = time.monotonic() + 120
while len(os.listdir(meet)) < 2 and time.monotonic() < give_up:
    time.sleep(0.02)
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
    assert auto.isolation == expected_isolation()
    assert (Capability.PRIVATE_MOUNTS in auto.capabilities) == (auto.isolation == "namespace")
    with pytest.raises(ValueError, match="isolation must be one of"):
        LocalProvider(tmp_path, OneZoneMarket(), RealClock(), isolation="docker")


@needs_namespaces
def test_each_instance_has_its_own_opt_ml(tmp_path: Path, namespaced: LocalProvider) -> None:
    (tmp_path / "writer.py").write_text(WRITER)
    meet = tmp_path / "meet"
    meet.mkdir()
    argv = (sys.executable, str(tmp_path / "writer.py"), str(meet))
    req = CapacityRequest("job-1", 1, "ml.m5.large", 1, False, Workload(argv))
    # Two separate launches: two independent instances writing the same path at once.
    refs = [namespaced.launch(namespaced.plan(req))[0] for _ in range(2)]
    wait_until(
        "both workloads to finish",
        lambda: all(namespaced.describe(r).phase is InstancePhase.TERMINATED for r in refs),  # type: ignore[union-attr]
    )
    assert len(list(meet.iterdir())) == 2  # they did meet, so they ran side by side
    for ref in refs:
        state = namespaced.describe(ref)
        assert state is not None and state.isolation == "namespace"
        assert state.cause is TerminationCause.EXITED
        ml = namespaced.root(ref) / "ml"
        assert (ml / "checkpoints" / "x.txt").read_text() == ref.id
        assert json.loads((ml / "seen.json").read_text()) == {"x.txt": ref.id}
    outside = Path("/opt/ml/checkpoints/x.txt")
    assert not (outside.exists() and outside.read_text() in {r.id for r in refs})
