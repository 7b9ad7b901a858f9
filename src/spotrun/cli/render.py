"""Plain-text views of jobs for the terminal."""

from __future__ import annotations

import datetime
import time
from typing import Any


def clock(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def transition_line(t: dict[str, Any]) -> str:
    return f"{clock(t['StartTime'])} {t['Status']} - {t.get('StatusMessage', '')}"


def jobs_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no training jobs"
    head = f"{'NAME':<40} {'STATUS':<11} {'SECONDARY':<20} {'CREATED':<19}"
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['TrainingJobName']:<40} {r['TrainingJobStatus']:<11} "
            f"{r.get('SecondaryStatus', ''):<20} {clock(r['CreationTime']):<19}"
        )
    return "\n".join(lines)


def price_note(source: str | None) -> str:
    """Where the costs' prices come from: EC2's, not SageMaker's (higher) ml.* prices."""
    where = f" from {source}" if source else " from the instance catalog"
    return (
        "EC2 on-demand and spot prices of the instance type behind ml.*" + where + "; "
        "not SageMaker's ml.* prices, which are higher"
    )


def policy_line(s: dict[str, Any]) -> str:
    """``uniform-progress, deadline 52h 0m (12:00:00 UTC), compute 48h 0m, pools …``."""
    if not s:
        return "-"
    parts = [str(s.get("Policy", "spot-only"))]
    if s.get("DeadlineInSeconds"):
        parts.append(f"deadline {duration(s['DeadlineInSeconds'])} ({clock(s['DeadlineTime'])})")
    if s.get("ComputeInSeconds"):
        parts.append(f"compute {duration(s['ComputeInSeconds'])}")
    if s.get("Pools"):
        parts.append("pools " + " ".join(s["Pools"]))
    return ", ".join(parts)


def forecast(f: dict[str, Any]) -> str:
    """``spotrun run --dry-run``: what the simulator expects of the job now."""
    lines = [
        f"Forecast for     {f['TrainingJobName']} ({f['Policy']}, {f['Runs']} market sample"
        f"{'s' if f['Runs'] != 1 else ''})",
        f"Expected cost    ${f['ExpectedCostUSD']:.4f}",
        f"On-demand cost   ${f['OnDemandCostUSD']:.4f}",
        f"Savings          {f['SavingsPercent']:.1f}%",
        f"Expected finish  {duration(f['ExpectedFinishSeconds'])} after submission"
        f" ({clock(f['ExpectedFinishTime'])})",
        "Deadline         "
        + (
            f"{duration(f['DeadlineInSeconds'])}, missed in {f['MissedPercent']:.0f}% of samples"
            if f.get("DeadlineInSeconds")
            else "-"
        ),
        f"Spot / on-demand {duration(f['SpotSeconds'])} / {duration(f['OnDemandSeconds'])}",
    ]
    if f.get("CheckpointIntervalSeconds"):
        mtbi = duration(f["MeanTimeBetweenInterruptions"])
        lines.append(
            f"Checkpoint every {duration(f['CheckpointIntervalSeconds'])} "
            f"(Young, mean time between interruptions {mtbi})"
        )
    return "\n".join(lines)


def summary(d: dict[str, Any]) -> str:
    """The job page: status, money, attempts and transitions."""
    x = d.get("Spotrun", {})
    training = d.get("TrainingTimeInSeconds")
    billable = d.get("BillableTimeInSeconds")
    rc = d["ResourceConfig"]
    sc = d["StoppingCondition"]
    lines = [
        f"Training job     {d['TrainingJobName']}",
        f"Status           {d['TrainingJobStatus']} / {d['SecondaryStatus']}",
        f"Instance         {rc['InstanceCount']} x {rc['InstanceType']}"
        + ("  (managed spot)" if d.get("EnableManagedSpotTraining") else "  (on-demand)"),
        f"Limits           max run {duration(sc.get('MaxRuntimeInSeconds'))}"
        + (
            f", max wait {duration(sc['MaxWaitTimeInSeconds'])}"
            if "MaxWaitTimeInSeconds" in sc
            else ""
        ),
        f"Isolation        {x.get('Isolation') or '-'}",
    ]
    if d.get("FailureReason"):
        lines.append(f"Failure reason   {d['FailureReason']}")
    lines += [
        "",
        f"Training seconds {training if training is not None else '-'}",
        f"Billable seconds {billable if billable is not None else '-'}",
        f"Savings          {x.get('SavingsPercent', 0.0):.1f}%",
        f"Cost             ${x.get('CostUSD', 0.0):.6f}",
        f"On-demand cost   ${x.get('OnDemandCostUSD', 0.0):.6f}",
        f"Prices           {price_note(x.get('PriceSource'))}",
        f"Spot / on-demand {duration(x.get('SpotSeconds', 0))} / "
        f"{duration(x.get('OnDemandSeconds', 0))}",
        f"Policy           {policy_line(x.get('Scheduling') or {})}",
        f"Interruptions    {x.get('Interruptions', 0)}",
        f"Retries used     {x.get('RetriesUsed', 0)}",
        f"Model            {d['ModelArtifacts']['S3ModelArtifacts']}",
    ]
    attempts = x.get("Attempts", [])
    if attempts:
        lines += ["", "Attempts"]
        for a in attempts:
            hosts = a.get("Hosts", [])
            restored = ", ".join(h["Restored"] for h in hosts if h.get("Restored")) or "-"
            syncs = [h["LastCheckpointSync"] for h in hosts if h.get("LastCheckpointSync")]
            steps = [h.get("LastSyncedCheckpointStep") for h in hosts]
            steps = [s for s in steps if s is not None]
            what = f"last synced checkpoint: step {max(steps)}, " if steps else "last sync "
            if not syncs:
                sync = "no checkpoint sync"
            elif a["State"] != "ended":  # a live attempt: how stale is its newest checkpoint?
                sync = f"{what}{time.time() - max(syncs):.0f} s ago"
            else:
                sync = f"{what}{clock(max(syncs))}"
            if any(h.get("CheckpointSyncStalledSince") for h in hosts) and a["State"] != "ended":
                sync += " (WARNING: checkpoint sync stalled)"
            lines.append(
                f"  #{a['Generation']} {a['State']:<8} {a.get('Cause') or '':<11} "
                f"{a.get('Pool') or '-'}  restored: {restored}; {sync}"
            )
    lines += ["", "Transitions"]
    lines += ["  " + transition_line(t) for t in d.get("SecondaryStatusTransitions", [])]
    return "\n".join(lines)
