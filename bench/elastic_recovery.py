"""How an elastic DDP job goes on through a loss and grows back (``--count 2..3``).

A server of its own in a temp home, on the local provider (poll 0.25 s, stop grace 5 s),
runs ``examples/ddp_digits/train.py`` with ``spotrun run --count 2..3`` (one rank per
instance, ``OMP_NUM_THREADS=1``, ``--step-seconds`` per step). Its market's pool offers
three instances; the third launched is reclaimed ``--uptime`` seconds after its launch,
with a notice 1.5 s ahead, and the pool then has no room for ``--gap`` seconds. The figures
come from the job's record (``spotrun.store.Store``): its events and its log lines, each
stamped by the agent that read it.

(a) notice -> training again on the two left: from algo-3's agent's ``interruption
    notice`` line to rank 0's ``resumed from ... at step S`` of round 2 (the new process
    group has formed and restored the agreed-step checkpoint). No capacity is waited for.
(b) steps trained while the instance was gone, and the seconds of it;
(c) capacity back -> training again on three: from the ``grow`` event (the controller
    launched algo-4, the moment the pool had room) to rank 0's ``resumed from`` of
    round 3. It includes algo-4's start and staging and the checkpoint at the old
    round's agreed step.

Each span's breakdown (checkpoint saved, regroup, rank 0's ``training with N rank(s)``)
is printed beside it, and the job must complete with the world going 3 -> 2 -> 3.

    .venv/bin/python bench/elastic_recovery.py [--uptime 30] [--gap 25] [--json]

About two minutes on a 2-core machine. Exits 1 if the job does not complete that way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from distributed_recovery import EXAMPLE, Home, until  # type: ignore[import-not-found]

from spotrun.store import LogRecord

MARKET = """
time_scale = 1
notice_lead_seconds = 1.5
[[pools]]
instance_type = "c5.4xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.4xlarge"
zone = "use1-az1"
process = "script"
uptimes = ["1h", "1h", "{uptime}s"]
gap = "{gap}s"
capacity = 3
"""
WORLD_RE = re.compile(r"^training with (\d+) rank\(s\)")
RESUMED_RE = re.compile(r"^resumed from \S+ at step (\d+)$")
SAVED_RE = re.compile(r"checkpoint saved at step (\d+)$")
NOTICE_RE = re.compile(r"^spotrun-agent: interruption notice")


def first(lines: list[LogRecord], pattern: re.Pattern[str], after: float) -> LogRecord:
    found = next((r for r in lines if r.time >= after and pattern.search(r.line)), None)
    if found is None:
        raise RuntimeError(f"no line matching {pattern.pattern!r} after {after}")
    return found


def run(home: Home, step_seconds: float) -> dict[str, Any]:
    job = "elastic-recovery"
    home.cli(
        "run", str(EXAMPLE), "--name", job, "--spot", "--count", "2..3",
        "--instance-type", "ml.c5.4xlarge", "--max-run", "15m", "--max-wait", "1h",
        "--hp", "epochs=20", "--hp", "checkpoint-every=10",
        "--hp", f"step-seconds={step_seconds}", "--env", "OMP_NUM_THREADS=1", "--detach",
    )  # fmt: skip
    until(lambda: home.rest.describe(job)["TrainingJobStatus"] != "InProgress", 900, job)
    status = home.rest.describe(job)["TrainingJobStatus"]
    lines = home.logs(job)
    events = home.store.events(job)
    worlds = [int(m.group(1)) for r in lines if (m := WORLD_RE.match(r.line))]
    out: dict[str, Any] = {"status": status, "worlds": worlds}
    if status != "Completed" or worlds[:3] != [3, 2, 3]:
        return out
    notice = first(lines, NOTICE_RE, 0.0)
    saved = first(lines, SAVED_RE, notice.time)
    shrink = next(e for e in events if e.kind == "regroup")
    resumed2 = first(lines, RESUMED_RE, notice.time)
    grow = next(e for e in events if e.kind == "grow")
    stopped = first(lines, SAVED_RE, grow.time)
    regrow = next(e for e in events if e.kind == "regroup" and e.time >= grow.time)
    resumed3 = first(lines, RESUMED_RE, grow.time)
    step2 = int(RESUMED_RE.match(resumed2.line).group(1))  # type: ignore[union-attr]
    step3 = int(RESUMED_RE.match(resumed3.line).group(1))  # type: ignore[union-attr]
    out.update(
        notice_to_training=resumed2.time - notice.time,
        notice_breakdown={
            "checkpoint saved": saved.time - notice.time,
            "regroup (controller)": shrink.time - notice.time,
            "resumed on 2": resumed2.time - notice.time,
        },
        steps_while_gone=step3 - step2,
        seconds_while_gone=stopped.time - resumed2.time,
        capacity_to_training=resumed3.time - grow.time,
        capacity_breakdown={
            "algo-4 staged, regroup": regrow.time - grow.time,
            "checkpoint saved": stopped.time - grow.time,
            "resumed on 3": resumed3.time - grow.time,
        },
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--uptime", type=float, default=30.0, help="algo-3 lives this long (30)")
    ap.add_argument("--gap", type=float, default=25.0, help="then no room this long (25)")
    ap.add_argument("--step-seconds", type=float, default=0.12)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--dir", default=None, help="where the temp home goes (default: $TMPDIR)")
    args = ap.parse_args()
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    market = MARKET.format(uptime=args.uptime, gap=args.gap)
    with tempfile.TemporaryDirectory(prefix="spotrun-elastic-", dir=args.dir) as tmp:
        home = Home(Path(tmp), market=market)
        try:
            out = run(home, args.step_seconds)
        finally:
            home.close()
    ok = out["status"] == "Completed" and out["worlds"][:3] == [3, 2, 3]
    if args.json:
        print(json.dumps({"ok": ok, **out}, indent=1))
        return 0 if ok else 1
    print(f"job: {out['status']}, world sizes by round: {out['worlds']}")
    if not ok:
        print("the job did not go 3 -> 2 -> 3 and complete")
        return 1
    print(f"(a) notice -> training on 2:      {out['notice_to_training']:6.2f} s")
    for what, t in out["notice_breakdown"].items():
        print(f"      {what:<28} +{t:.2f} s")
    print(
        f"(b) while algo-3 was gone:        {out['steps_while_gone']} steps in "
        f"{out['seconds_while_gone']:.1f} s"
    )
    print(f"(c) capacity back -> training on 3: {out['capacity_to_training']:5.2f} s")
    for what, t in out["capacity_breakdown"].items():
        print(f"      {what:<28} +{t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
