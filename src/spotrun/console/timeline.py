"""A job's timeline as Gantt rows: the job's own statuses, then one row per instance of
each attempt, with its waiting, running, notice and resumed spans.

Pure: it reads what DescribeTrainingJob (with ``Spotrun``) returns and the time ``now``
(for spans still open), and gives seconds since the job's creation, which is what the
detail page's chart draws. A market's notice is recorded by its deadline only: its span is
drawn from ``deadline - notice_lead`` (the provider's lead); an "Interrupt now" records
when it served the notice (its event), which is then the span's start. Either way it
starts no earlier than the instance's launch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: span kinds, in the legend's order
KINDS = ("waiting", "running", "resumed", "notice", "interrupted", "ended")

_STATUS_KIND = {
    "Starting": "waiting",
    "Pending": "waiting",
    "Downloading": "running",
    "Training": "running",
    "Uploading": "running",
    "Interrupted": "interrupted",
    "Restarting": "interrupted",
    "Stopping": "ended",
}
_LEAD = re.compile(r"reclaimed in ([0-9.]+) s")
#: attempt causes after which the next attempt resumes (the controller's names)
_INTERRUPTING = ("preempted", "lost")


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    kind: str
    label: str


@dataclass(frozen=True)
class Row:
    label: str
    spans: tuple[Span, ...]


def timeline(job: dict[str, Any], now: float, notice_lead: float) -> list[Row]:
    """The Gantt rows of a described job (``describe(..., extras=True)``)."""
    origin = float(job["CreationTime"])
    end_of_job = _end_of_job(job, now)

    def rel(t: float | None) -> float:
        return round((end_of_job if t is None else float(t)) - origin, 3)

    rows: list[Row] = []
    transitions = job.get("SecondaryStatusTransitions", [])
    status_spans = []
    for t in transitions:
        kind = _STATUS_KIND.get(t["Status"], "ended")
        end = t.get("EndTime")
        if end is None and kind == "ended":
            end = t["StartTime"]  # a terminal status: a point, not a span
        status_spans.append(Span(rel(t["StartTime"]), rel(end), kind, t["Status"]))
    rows.append(Row("job", tuple(status_spans)))

    extras = job.get("Spotrun", {})
    # "Interrupt now" records when it served the notice; a market's own notice is drawn
    # its lead before the deadline
    asked = [
        float(e["Time"])
        for e in extras.get("Events", [])
        if e.get("Kind") == "interrupt" and _LEAD.search(e.get("Message", ""))
    ]
    attempts = {a["Generation"]: a for a in extras.get("Attempts", [])}
    interrupted_before = False
    for generation in sorted(attempts):
        attempt = attempts[generation]
        created = float(attempt["CreatedAt"])
        deadline = attempt.get("NoticeDeadline")
        notice_start: float | None = None
        if deadline is not None:
            served = [t for t in asked if created <= t <= float(deadline)]
            notice_start = served[-1] if served else float(deadline) - notice_lead
        instances = [i for i in extras.get("Instances", []) if i["Generation"] == generation]
        restored = {h["Host"]: h.get("Restored") for h in attempt.get("Hosts", [])}
        if not instances:
            # an attempt that never got capacity: it only waited
            cause = attempt.get("Cause") or "waiting"
            wait = Span(rel(created), rel(attempt.get("EndedAt")), "waiting", cause)
            rows.append(Row(f"attempt {generation} · no instance", (wait,)))
        for instance in sorted(instances, key=lambda i: str(i["Host"])):
            spans = []
            launched = instance.get("LaunchedAt")
            if launched is not None and launched > created:
                spans.append(Span(rel(created), rel(launched), "waiting", "waiting"))
            start = float(launched if launched is not None else created)
            stop = instance.get("TerminatedAt") or attempt.get("EndedAt")
            run_end = stop
            notice: Span | None = None
            if notice_start is not None and deadline is not None:
                begin = max(start, notice_start)
                notice_end = float(stop) if stop is not None else max(float(deadline), now)
                run_end = begin
                notice = Span(rel(begin), rel(max(begin, notice_end)), "notice", "notice")
            kind = "resumed" if interrupted_before else "running"
            label = "resumed" if interrupted_before else "running"
            if interrupted_before and restored.get(instance["Host"]):
                label = "resumed from checkpoint"
            spans.append(Span(rel(start), rel(run_end), kind, label))
            if notice is not None:
                spans.append(notice)
            if attempt.get("Cause") in _INTERRUPTING and stop is not None:
                spans.append(Span(rel(stop), rel(stop), "interrupted", "interrupted"))
            market = "spot" if instance.get("Spot") else "on-demand"
            rows.append(Row(f"attempt {generation} · {instance['Host']} · {market}", tuple(spans)))
        if attempt.get("Cause") in _INTERRUPTING:
            interrupted_before = True
    return rows


def _end_of_job(job: dict[str, Any], now: float) -> float:
    if job.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped"):
        return float(job.get("TrainingEndTime") or job.get("LastModifiedTime") or now)
    return now


def chart_data(rows: list[Row]) -> dict[str, Any]:
    """The rows as the console's Gantt script reads them (JSON)."""
    return {
        "rows": [r.label for r in rows],
        "spans": [
            {"row": i, "start": s.start, "end": s.end, "kind": s.kind, "label": s.label}
            for i, r in enumerate(rows)
            for s in r.spans
        ],
        "kinds": list(KINDS),
    }
