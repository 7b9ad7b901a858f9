"""The Lightning example (examples/lightning_digits) as a spot job: submitted with
``spotrun run``, interrupted mid-training with ``spotrun interrupt``, resumed by the next
attempt from the toolkit's newest checkpoint, and completed with a model that classifies
held-out digits well. About 30 s on 2 cores (Lightning's import is most of each attempt).
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")

from sagemaker_server import Server  # noqa: E402
from test_algorithms_e2e import (  # noqa: E402, F401
    finished_through_an_interruption,
    run_example_and_interrupt,
    server,
)

# a long run of a README example: `make test-slow`, not CI, where test_toolkit_lightning.py
# proves the toolkit's Lightning resume exact
pytestmark = [pytest.mark.torch, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_digits"
EPOCHS = 40
EPOCH_RE = re.compile(r"^epoch=(\d+) val_accuracy=")


@pytest.mark.timeout(900)  # 40 epochs and two Lightning imports: minutes on a loaded machine
def test_lightning_example_resumes_after_an_interruption(server: Server) -> None:  # noqa: F811
    # interrupt once a few epochs are done, well before the last
    run_example_and_interrupt(
        server, EXAMPLE / "train.py", "lit-spot", EPOCH_RE, 3, "--hp", f"epochs={EPOCHS}"
    )

    d, text = finished_through_an_interruption(server, "lit-spot", timeout=600)
    assert text.count("starting fresh") == 1
    resumed = [line for line in text if line.startswith("resumed from ckpt-")]
    assert len(resumed) == 1, [line for line in text if not EPOCH_RE.match(line)]
    step = int(resumed[0].split("-")[1])
    assert step > 0  # it went on from a checkpoint, not from scratch
    done = sorted({int(m.group(1)) for line in text if (m := EPOCH_RE.match(line))})
    assert done == list(range(1, EPOCHS + 1))  # every epoch validated, none skipped
    final = [line for line in text if line.startswith("final test_accuracy=")]
    assert len(final) == 1 and float(final[0].split("=")[1]) >= 0.95, final

    artifact = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact.startswith("file://"), artifact
    with tarfile.open(artifact.removeprefix("file://")) as t:
        member = t.extractfile("model.pt")
        assert member is not None
        state = torch.load(io.BytesIO(member.read()), weights_only=True)
    assert state["net.0.weight"].shape == (128, 64)
