"""An elastic DDP job (``spotrun run --count 2..4``) on the local provider: it starts on the
three instances the market has, loses one to a spot reclaim, keeps training on the two
left without waiting for capacity, and grows back to three when capacity returns, all in
one attempt.

The market's pool offers three instances; the third one launched is reclaimed 30 s after
its launch (with a notice), and then the pool has no room for 25 s. Every change of the
world size goes through a checkpoint: the ranks agree on a step, rank 0 saves it, and the
next round's ranks resume from exactly there. About a minute and a half.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sagemaker_server import MARKET, Server  # noqa: E402
from test_algorithms_e2e import job_log, wait_done  # noqa: E402
from test_multi_instance import leftovers  # noqa: E402

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


@pytest.mark.timeout(600)
def test_elastic_job_trains_on_through_a_loss_and_grows_back(server: Server) -> None:
    out = server.cli(
        "run", str(EXAMPLE), "--name", "elastic", "--spot", "--count", "2..4",
        "--instance-type", "ml.c5.4xlarge", "--max-run", "10m", "--max-wait", "1h",
        "--hp", "epochs=10", "--hp", "checkpoint-every=10", "--hp", "step-seconds=0.15",
        "--env", "OMP_NUM_THREADS=1", "--detach",
    )  # fmt: skip
    assert "elastic" in out, out
    done = wait_done(server.client(), "elastic", timeout=500)
    described = server.rest().describe("elastic")["Spotrun"]
    events = [e["Message"] for e in described["Events"]]
    assert done["TrainingJobStatus"] == "Completed", (done.get("FailureReason"), events)

    log = job_log(server, "elastic")
    # one line per round from its rank 0: 3 ranks, then 2 while the third was gone, then 3
    worlds = [int(m.group(1)) for line in log if (m := WORLD_RE.match(line))]
    assert worlds == [3, 2, 3], [x for x in log if not x.startswith("epoch=")]
    saved = [int(m.group(1)) for line in log if (m := SAVED_RE.search(line))]
    resumed = [int(m.group(1)) for line in log if (m := RESUMED_RE.match(line))]
    # each regroup: every rank stopped at one step, rank 0 saved it, the next round began
    # there; and steps went on while the instance was gone
    assert len(saved) == 2 and resumed == saved, (saved, resumed)
    assert resumed[1] > resumed[0] > 0, resumed

    # one attempt throughout, which ended with algo-4 in algo-3's place
    assert len(described["Attempts"]) == 1, described["Attempts"]
    elastic = described["Attempts"][0]["Elastic"]
    assert elastic == {"Round": 3, "Members": ["algo-1", "algo-2", "algo-4"], "Size": 3}
    hosts = {i["Host"]: i for i in described["Instances"]}
    assert sorted(hosts) == ["algo-1", "algo-2", "algo-3", "algo-4"], hosts
    # reclaimed, or shut down first: its agent flushed and ended within the notice lead
    assert hosts["algo-3"]["Cause"] in ("preempted", "exited"), hosts["algo-3"]
    assert described["Interruptions"] == 1
    assert any("world 3 -> 2" in e for e in events) and any("world 2 -> 3" in e for e in events)
    assert not leftovers(server, [i["Id"] for i in described["Instances"]])
