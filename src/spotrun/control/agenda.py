"""When each job is next due for a reconcile step: its own deadline, or news about it.

A job is due when the time its last step asked for has come, or when its change marks
moved since that step: ``version`` (a stop request, another writer) or ``signal`` (an
agent's report). The controller reads all marks with one query per pass; a sweep of the
provider's live instances ``poke``s the jobs whose instances changed. Everything else
waits for its deadline, so an idle fleet of running jobs costs one query per poll.

The ``idle`` safety net steps a job nobody had news of at least that often. It is there
for news a bug let slip, not as a poll: with a hundred jobs running, a net of half a minute
cost the controller more than all their deadlines and reports together. The bill a running
job shows is brought up to date at each of its steps (news, deadline, or this net).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

Mark = tuple[int, int]  # (version, signal) of a job row


@dataclass
class Agenda:
    """Due times and last-seen marks per job. Pure bookkeeping: the caller gives the time."""

    #: the longest a job goes unlooked at, whatever it asked: a safety net for news missed
    idle: float = 300.0
    _due: dict[str, float] = field(default_factory=dict)
    _seen: dict[str, Mark] = field(default_factory=dict)

    def due(self, marks: Mapping[str, Mark], now: float) -> list[str]:
        """The jobs to step now, in ``marks`` order; jobs no longer active are forgotten."""
        for gone in self._seen.keys() - marks.keys():
            self.forget(gone)
        return [
            name
            for name, mark in marks.items()
            if self._seen.get(name) != mark or self._due.get(name, 0.0) <= now
        ]

    def stepped(self, name: str, mark: Mark, now: float, after: float | None) -> None:
        """Record a step: the marks it leaves behind and when it wants to be called again."""
        self._seen[name] = mark
        self._due[name] = now + (self.idle if after is None else min(after, self.idle))

    def poke(self, name: str) -> None:
        """Make a job due at once (news about it came from outside its row)."""
        self._due[name] = 0.0

    def forget(self, name: str) -> None:
        self._due.pop(name, None)
        self._seen.pop(name, None)

    def wait(self, now: float) -> float:
        """Seconds until the earliest due job (``idle`` if none is known)."""
        if not self._due:
            return self.idle
        return max(0.0, min(self._due.values()) - now)

    def seen(self, name: str) -> Mark | None:
        """The marks ``name`` had after its last step (None: not stepped yet)."""
        return self._seen.get(name)

    def when(self, name: str) -> float | None:
        """When ``name`` is next due (None: not tracked)."""
        return self._due.get(name)
