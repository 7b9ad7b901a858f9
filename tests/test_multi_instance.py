"""A DDP job across three instances (``spotrun run --count 3``), one rank on each, on the
local provider: the leader's agent publishes its rendezvous, the others' ranks join it, and
the job survives two interruptions of different kinds.

* a notice to the instance of rank 2 only (``spotrun interrupt --host algo-3``): every
  rank stops at one agreed step, rank 0 commits one checkpoint, and the job resumes on
  three fresh instances from exactly that step;
* a hard loss of rank 0's instance (its host process tree SIGKILLed, no notice): the
  provider says so, the attempt ends within seconds, and the job resumes from the last
  periodic checkpoint.

The final model equals an uninterrupted three-instance run's, tensor for tensor, and no
process of an ended attempt is left on any instance. About a minute and a half.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from events import wait_until  # noqa: E402
from sagemaker_server import Server  # noqa: E402
from spotrun.providers.local import _procs  # noqa: E402
from test_algorithms_e2e import job_log, wait_done  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits" / "train.py"
EPOCHS = 5
HPS = (
    "--hp", f"epochs={EPOCHS}", "--hp", "checkpoint-every=7", "--hp", "step-seconds=0.08",
    # one kernel thread, as torchrun sets for its ranks: multi-threaded CPU kernels do not
    # promise the same bits from run to run, and three instances share this machine's cores
    "--env", "OMP_NUM_THREADS=1",
)  # fmt: skip
EPOCH_RE = re.compile(r"^epoch=(\d+) loss=")
RESUMED_RE = re.compile(r"^resumed from \S+ at step (\d+)$")
SAVED_RE = re.compile(r"checkpoint saved at step (\d+)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("multi-instance"), reclaim=None)
    yield s
    s.stop()


def submit(server: Server, name: str) -> None:
    out = server.cli(
        "run", str(EXAMPLE), "--name", name, "--spot", "--count", "3",
        "--instance-type", "ml.c5.2xlarge",  # never reclaimed unasked: the interruptions are ours
        "--max-run", "10m", "--max-wait", "1h", *HPS, "--detach",
        "--retries", "1",  # the hard loss is an internal error: RetryStrategy retries it
    )  # fmt: skip
    assert name in out, out


def model(server: Server, d: dict[str, Any]) -> dict[str, Any]:
    uri = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri.startswith("file://"), uri
    with tarfile.open(uri.removeprefix("file://")) as tar:
        member = tar.extractfile("model.pt")
        assert member is not None
        state: dict[str, Any] = torch.load(io.BytesIO(member.read()), weights_only=True)
    return state


def instances(server: Server, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = server.rest().describe(name)["Spotrun"]["Instances"]
    return found


def running(server: Server, name: str, generation: int) -> list[dict[str, Any]]:
    """The attempt's three instances once its rank 0 has trained an epoch in it."""
    mine = [i for i in instances(server, name) if i["Generation"] == generation]
    log = job_log(server, name)
    resumed = [line for line in log if RESUMED_RE.match(line)]
    if len(mine) != 3 or len(resumed) < generation - 1:
        return []
    since = log[log.index(resumed[-1]) :] if resumed else log
    return mine if any(EPOCH_RE.match(line) for line in since) else []


def leftovers(server: Server, ids: list[str]) -> set[int]:
    """Processes still alive of these instances: the host, or anything it started."""
    left: set[int] = set()
    for i in ids:
        left |= _procs.marked("SPOTRUN_INSTANCE_ID", i)
        state = server.settings.home / "instances" / i / "state.json"
        pid = json.loads(state.read_text()).get("pid") if state.exists() else None
        if isinstance(pid, int) and _procs.alive({"pid": pid}):
            left.add(pid)
    return left


def hard_kill(server: Server, instance_id: str) -> None:
    """What a lost machine does: the instance's whole tree dies at once, no notice."""
    state = json.loads(
        (server.settings.home / "instances" / instance_id / "state.json").read_text()
    )
    host = int(state["pid"])
    tree = _procs.descendants(host, _procs.all_stats())
    # the host first: were its agent to die before it, it would record an orderly exit
    os.kill(host, signal.SIGKILL)
    _procs.kill(tree)


# `make test-slow`, not CI (45 s): CI covers multi-instance DDP through interruptions in
# test_slurm_service.py (two nodes, two preemptions), test_toolkit_ddp.py (two ranks
# interrupted four ways, identical tensors) and test_sagemaker_sdk.py (torchrun on two
# instances)
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_instance_ddp_job_survives_a_notice_and_a_hard_loss_exactly(
    server: Server,
) -> None:
    submit(server, "ddp3-base")
    submit(server, "ddp3-spot")

    # 1. a notice to rank 2's instance only
    first = wait_until("attempt 1 training", lambda: running(server, "ddp3-spot", 1))
    assert sorted(i["Host"] for i in first) == ["algo-1", "algo-2", "algo-3"]
    out = server.cli("interrupt", "ddp3-spot", "--host", "algo-3", "--lead", "60")
    algo3 = next(i["Id"] for i in first if i["Host"] == "algo-3")
    assert f"notice served on {algo3};" in out, out

    # 2. a hard loss of rank 0's instance in the next attempt
    second = wait_until("attempt 2 training", lambda: running(server, "ddp3-spot", 2))
    assert not leftovers(server, [i["Id"] for i in first])  # nothing of attempt 1 is left
    algo1 = next(i["Id"] for i in second if i["Host"] == "algo-1")
    lost_at = time.time()
    hard_kill(server, algo1)
    third = wait_until("attempt 3 training", lambda: running(server, "ddp3-spot", 3))
    ended = {i["Id"]: i for i in instances(server, "ddp3-spot")}[algo1]
    assert ended["Cause"] == "lost", ended
    assert not leftovers(server, [i["Id"] for i in second])
    assert len(third) == 3

    base = wait_done(server.client(), "ddp3-base", timeout=300)
    spot = wait_done(server.client(), "ddp3-spot", timeout=300)
    assert base["TrainingJobStatus"] == "Completed", base.get("FailureReason")
    assert spot["TrainingJobStatus"] == "Completed", spot.get("FailureReason")
    statuses = [t["Status"] for t in spot["SecondaryStatusTransitions"]]
    events = [e["Message"] for e in server.rest().describe("ddp3-spot")["Spotrun"]["Events"]]
    assert statuses.count("Interrupted") == 1 and statuses.count("Restarting") == 1, events
    described = server.rest().describe("ddp3-spot")
    assert described["Spotrun"]["Interruptions"] == 1, described["Spotrun"]
    assert described["Spotrun"]["RetriesUsed"] == 1, described["Spotrun"]
    # each host says what network its ranks used: an address of its own where the machine
    # gives one (traffic between ranks crosses veths), else the shared loopback
    for attempt in described["Spotrun"]["Attempts"]:
        nets = [h["Network"] for h in attempt["Hosts"]]
        assert len(nets) == 3 and (
            nets == ["loopback"] * 3
            or (all(n.startswith("netns 10.") for n in nets) and len(set(nets)) == 3)
        ), nets
        leader = next(h for h in attempt["Hosts"] if h["Host"] == "algo-1")
        assert leader["Rendezvous"] is not None, attempt
    # the loss was seen within seconds: the lost attempt's other instances ended promptly
    gen2_ends = [i["TerminatedAt"] for i in instances(server, "ddp3-spot") if i["Generation"] == 2]
    assert all(e is not None and e - lost_at < 15 for e in gen2_ends), (lost_at, gen2_ends)
    assert not leftovers(server, [i["Id"] for i in instances(server, "ddp3-spot")])

    log = job_log(server, "ddp3-spot")
    # the notice: every rank stopped at one step, which rank 0 saved once, and the next
    # attempt went on from exactly there; the loss: a resume from a periodic checkpoint
    saved = [int(m.group(1)) for line in log if (m := SAVED_RE.search(line))]
    resumed = [int(m.group(1)) for line in log if (m := RESUMED_RE.match(line))]
    assert len(saved) == 1 and len(resumed) == 2, [x for x in log if not EPOCH_RE.match(x)]
    assert resumed[0] == saved[0] > 0 and resumed[1] % 7 == 0, (saved, resumed)
    assert log.count("training with 3 rank(s), 29 steps per epoch") == 3
    assert any("rendezvous at 127.0.0.1:" in line or "rendezvous at 10." in line for line in log)

    a, b = model(server, base), model(server, spot)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_the_example_reads_the_digits_scikit_learn_would_give_it() -> None:
    """The example reads scikit-learn's bundled digits itself (importing scikit-learn would
    cost every rank's start 1.8 CPU-s); the split must be ``train_test_split``'s."""
    import importlib.util

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    found = importlib.util.spec_from_file_location("ddp_digits_train", EXAMPLE)
    assert found is not None and found.loader is not None
    example = importlib.util.module_from_spec(found)
    found.loader.exec_module(example)
    for seed in (0, 7):
        x, y = load_digits(return_X_y=True)
        x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.2, random_state=seed)
        want = (x_tr, y_tr, x_te, y_te)  # the example's order
        got = example.data(seed)
        for a, b in zip(want, got, strict=True):
            assert torch.equal(torch.as_tensor(a).to(b.dtype), b)
