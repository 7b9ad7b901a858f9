"""An elastic DDP job (``spotrun run --count 2..4``) on the local provider: it starts on the
three instances the market has, loses one to a spot reclaim, keeps training on the two
left without waiting for capacity, and grows back to three when capacity returns; then it
loses one with no notice at all (its machine dies) and does the same again. All in one
attempt.

The market's pool offers three instances; the third one launched is reclaimed 30 s after
its launch (with a notice), and then the pool has no room for 25 s. A change of world size
after a notice or a growth goes through a checkpoint: the ranks agree on a step, rank 0
saves it, and the next round's ranks resume from exactly there; after a loss, the next
round resumes from the last periodic checkpoint. About two minutes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from events import wait_until  # noqa: E402
from sagemaker_server import MARKET, Server  # noqa: E402
from test_algorithms_e2e import job_log, wait_done  # noqa: E402
from test_multi_instance import hard_kill, leftovers  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits" / "train.py"
ELASTIC_MARKET = (
    MARKET
    + """
[[pools]]
instance_type = "c5.4xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.4xlarge"
zone = "use1-az1"
process = "script"
uptimes = ["1h", "1h", "30s"]
gap = "25s"
capacity = 3
"""
)
WORLD_RE = re.compile(r"^training with (\d+) rank\(s\)")
RESUMED_RE = re.compile(r"^resumed from \S+ at step (\d+)$")
SAVED_RE = re.compile(r"checkpoint saved at step (\d+)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("elastic"), reclaim=None, market=ELASTIC_MARKET)
    yield s
    s.stop()


def synced_step(server: Server) -> int:
    """The newest checkpoint step algo-1 has synced."""
    (attempt,) = server.rest().describe("elastic")["Spotrun"]["Attempts"]
    leader = next(h for h in attempt["Hosts"] if h["Host"] == "algo-1")
    return int(leader["LastSyncedCheckpointStep"] or 0)


# `make test-slow`, not CI (110 s): CI covers elastic rounds (shrinking on a loss, growing
# when capacity returns, draining, world sizes) in test_elastic_control.py and ranks that
# stop and regroup under torchrun in test_toolkit_ddp.py; bench/elastic_recovery.py
# measures the whole run
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_elastic_job_trains_on_through_a_loss_and_grows_back(server: Server) -> None:
    out = server.cli(
        "run", str(EXAMPLE), "--name", "elastic", "--spot", "--count", "2..4",
        "--instance-type", "ml.c5.4xlarge", "--max-run", "10m", "--max-wait", "1h",
        "--hp", "epochs=20", "--hp", "checkpoint-every=10", "--hp", "step-seconds=0.12",
        "--env", "OMP_NUM_THREADS=1", "--detach",
    )  # fmt: skip
    assert "elastic" in out, out

    def worlds() -> list[int]:
        return [
            int(m.group(1)) for line in job_log(server, "elastic") if (m := WORLD_RE.match(line))
        ]

    # the reclaim and the growth back come from the market; then, once the third round has
    # synced a periodic checkpoint of its own, a machine dies
    wait_until("grown back to 3", lambda: worlds() == [3, 2, 3], timeout=240)
    since = max(int(m.group(1)) for x in job_log(server, "elastic") if (m := RESUMED_RE.match(x)))
    wait_until("a checkpoint of round 3", lambda: synced_step(server) >= since + 10, timeout=120)
    algo4 = next(
        i["Id"] for i in server.rest().describe("elastic")["Spotrun"]["Instances"]
        if i["Host"] == "algo-4"
    )  # fmt: skip
    hard_kill(server, algo4)
    done = wait_done(server.client(), "elastic", timeout=500)
    described = server.rest().describe("elastic")["Spotrun"]
    events = [e["Message"] for e in described["Events"]]
    assert done["TrainingJobStatus"] == "Completed", (done.get("FailureReason"), events)

    log = job_log(server, "elastic")
    # one line per round from its rank 0: 3 ranks, 2 while the third was gone, 3 again;
    # after the loss, capacity was there at once: 2 ranks only until the fifth host came
    # (not at all if it came first), then 3
    seen = worlds()
    assert seen[:3] == [3, 2, 3] and seen[3:] in ([2, 3], [3]), seen
    saved = [int(m.group(1)) for line in log if (m := SAVED_RE.search(line))]
    resumed = [int(m.group(1)) for line in log if (m := RESUMED_RE.match(line))]
    # the notice and each growth: every rank stopped at one step, rank 0 saved it, the
    # next round began there; steps went on while an instance was gone. The loss: from the
    # last periodic checkpoint, one taken in the third round.
    assert len(resumed) == len(seen) - 1 and len(saved) == len(seen) - 2, (saved, resumed)
    assert resumed[:2] == saved[:2] and resumed[1] > resumed[0] > 0, (saved, resumed)
    assert resumed[2] % 10 == 0 and resumed[2] >= resumed[1] + 10, (saved, resumed)
    assert resumed[3:] == saved[2:], (saved, resumed)

    # one attempt throughout, which ended with algo-5 in algo-4's place
    assert len(described["Attempts"]) == 1, described["Attempts"]
    elastic = described["Attempts"][0]["Elastic"]
    assert elastic == {"Round": 5, "Members": ["algo-1", "algo-2", "algo-5"], "Size": 3}
    hosts = {i["Host"]: i for i in described["Instances"]}
    assert sorted(hosts) == ["algo-1", "algo-2", "algo-3", "algo-4", "algo-5"], hosts
    # reclaimed, or shut down first: its agent flushed and ended within the notice lead
    assert hosts["algo-3"]["Cause"] in ("preempted", "exited"), hosts["algo-3"]
    assert hosts["algo-4"]["Cause"] == "lost", hosts["algo-4"]
    assert described["Interruptions"] == 2
    assert sum("world 3 -> 2" in e for e in events) == 2, events
    assert sum("world 2 -> 3" in e for e in events) == 2, events
    # the log says where each round ran, and every host that joined got a name of its own
    assert any("round 5: algo-5 is node 2 of 3" in line for line in log)
    assert not leftovers(server, [i["Id"] for i in described["Instances"]])
