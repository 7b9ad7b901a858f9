"""The training script the service-level tests run as a job: one step per ``--step-seconds``
(0.1 by default), the step saved after each; on SIGTERM it writes its checkpoint, taking
``--save-seconds`` over it (a notice window kept open), and exits 75.

A metronome: an attempt's n-th step ends n step-times after it started, so two runs of
the same steps take the same time, whatever the machine's load does to each sleep.
"""

from __future__ import annotations

STEP_SCRIPT = r"""
import os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ["SPOTRUN_CHECKPOINT_DIR"])
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
steps, dt = int(args["--steps"]), float(args.get("--step-seconds", "0.1"))
save_seconds = float(args["--save-seconds"])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
state = ck / "step.txt"
step = int(state.read_text()) if state.exists() else 0
print(f"resumed from step {step}" if step else "starting fresh", flush=True)
def save(n, slow=0.0):
    tmp = ck / ".step.tmp"
    tmp.write_text(str(n))
    time.sleep(slow)
    os.replace(tmp, state)
start, done_here = time.monotonic(), 0
while step < steps:
    if stop:
        save(step, save_seconds)
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75)
    done_here += 1
    # a metronome: this attempt's n-th step ends n step-times after it started
    time.sleep(max(0.0, start + done_here * dt - time.monotonic()))
    step += 1
    save(step)
    print(f"step {step}", flush=True)
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
(model / "model.txt").write_text(f"steps={step}")
print("done", flush=True)
"""
