"""A Pipe-mode training script (run as a job by ``test_input_modes.py``): a scikit-learn
``SGDClassifier`` trained with ``partial_fit`` on CSV rows of the digits data set (64
pixels, then the label), one pass over the ``train`` channel's FIFO per epoch.

It reads ``$SM_CHANNEL_TRAIN_<n>`` for the n-th epoch of its attempt (``_0`` first, on a
new attempt too) and logs what it read (``epoch E read train_N B bytes sha256 H``). Its
state (model and epochs done) is a checkpoint: on SIGTERM it finishes the epoch in hand,
saves and exits 75. A fresh start trains until it is interrupted (at most ``--max-epochs``);
a resumed one trains ``--more`` epochs and saves the model.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import pickle
import signal
import stat
import sys
import time
from typing import Any

import numpy as np
from sklearn.linear_model import SGDClassifier

args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
more, max_epochs = int(args["--more"]), int(args.get("--max-epochs", "200"))
pause = float(args.get("--pause", "0.2"))
channel = os.environ["SM_CHANNEL_TRAIN"]
checkpoints = pathlib.Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
state_file = checkpoints / "state.pkl"

stop = False


def on_term(*_: object) -> None:
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)

print(f"channel folder holds {sorted(os.listdir(channel))}", flush=True)
state: dict[str, Any]
if state_file.exists():
    state = pickle.loads(state_file.read_bytes())
    print(f"resumed at epoch {state['epoch']}", flush=True)
    end = state["epoch"] + more
else:
    state = {"epoch": 0, "model": SGDClassifier(random_state=0)}
    print("starting fresh", flush=True)
    end = max_epochs


def save() -> None:
    tmp = checkpoints / ".state.tmp"
    tmp.write_bytes(pickle.dumps(state))
    os.replace(tmp, state_file)


n = 0  # this attempt's FIFO
X = y = None
while state["epoch"] < end:
    fifo = f"{channel}_{n}"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), f"{fifo} is no FIFO"
    with open(fifo, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    print(
        f"epoch {state['epoch']} read {os.path.basename(fifo)} {len(data)} bytes sha256 {digest}",
        flush=True,
    )
    rows = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.float64)
    X, y = rows[:, :-1] / 16.0, rows[:, -1].astype(int)
    state["model"].partial_fit(X, y, classes=np.arange(10))
    state["epoch"] += 1
    n += 1
    save()
    if stop:
        print(f"checkpointed at epoch {state['epoch']}", flush=True)
        sys.exit(75)
    time.sleep(pause)

assert X is not None and y is not None
accuracy = state["model"].score(X, y)
model_dir = pathlib.Path(os.environ["SM_MODEL_DIR"])
(model_dir / "model.pkl").write_bytes(pickle.dumps(state["model"]))
print(f"trained {state['epoch']} epochs accuracy={accuracy:.4f}", flush=True)
print("done", flush=True)
