"""The DDP example (examples/ddp_digits) as a spot job with two ranks: ``spotrun run
--processes-per-host 2`` starts it under torchrun, ``spotrun interrupt`` reclaims the
instance mid-training, and the next attempt's ranks resume together from rank 0's
checkpoint and finish with a model that classifies held-out digits well. About 30 s.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import botocore.exceptions
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sagemaker_server import Server  # noqa: E402
from test_algorithms_e2e import (  # noqa: E402, F401
    finished_through_an_interruption,
    run_example_and_interrupt,
    server,
)

# a long run of a README example: `make test-slow`, not CI, where test_toolkit_ddp.py (two
# ranks, four kinds of interruption) and the SDK's torch_distributed test cover DDP
pytestmark = [pytest.mark.torch, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits"
EPOCHS = 12
EPOCH_RE = re.compile(r"^epoch=(\d+) loss=")


@pytest.mark.timeout(900)  # two attempts of two ranks each: minutes on a loaded machine
def test_ddp_example_runs_as_two_ranks_and_resumes_after_an_interruption(
    server: Server,  # noqa: F811
) -> None:
    # interrupt once two epochs are done, well before the last
    run_example_and_interrupt(
        server, EXAMPLE / "train.py", "ddp-spot", EPOCH_RE, 2,
        "--processes-per-host", "2", "--hp", f"epochs={EPOCHS}",
    )  # fmt: skip

    d, text = finished_through_an_interruption(server, "ddp-spot", timeout=600)
    # both ranks stopped at the same step; rank 0 said where, and the next attempt's ranks
    # went on from exactly there
    saved = [line for line in text if "checkpoint saved at step" in line]
    resumed = [line for line in text if line.startswith("resumed from ckpt-")]
    assert len(saved) == 1 and len(resumed) == 1, [t for t in text if not EPOCH_RE.match(t)]
    step = int(saved[0].rsplit(" ", 1)[1])
    assert step > 0 and resumed[0].endswith(f"at step {step}")
    assert text.count("training with 2 rank(s), 44 steps per epoch") == 2  # both attempts
    done = sorted({int(m.group(1)) for line in text if (m := EPOCH_RE.match(line))})
    assert done == list(range(1, EPOCHS + 1))
    final = [line for line in text if line.startswith("final test_accuracy=")]
    assert len(final) == 1 and float(final[0].split("=")[1]) >= 0.9, final

    artifact = d["ModelArtifacts"]["S3ModelArtifacts"]
    with tarfile.open(artifact.removeprefix("file://")) as t:
        member = t.extractfile("model.pt")
        assert member is not None
        state = torch.load(io.BytesIO(member.read()), weights_only=True)
    assert state["0.weight"].shape == (256, 64)


def test_ranks_for_a_built_in_algorithm_are_refused_naming_the_field(
    server: Server,  # noqa: F811
) -> None:
    req = server.request("ddp-refused", "ml.c5.2xlarge")
    req["AlgorithmSpecification"] = {"AlgorithmName": "xgboost", "TrainingInputMode": "File"}
    req["Environment"] = {"SPOTRUN_PROCESSES_PER_HOST": "2"}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        server.client().create_training_job(**req)
    assert "Environment.SPOTRUN_PROCESSES_PER_HOST" in str(e.value)
    assert "built-in algorithms run as one process" in str(e.value)
