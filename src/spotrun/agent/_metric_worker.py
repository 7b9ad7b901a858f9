"""The metric matcher process, started by ``spotrun.agent.metrics``. Standard library only:
it is run by file path with ``python -I``, so it imports nothing of spotrun.

Protocol, one JSON document per line. In: first ``{"regexes": [...], "budget": s,
"per_line": s}``, then batches (lists of log lines). Out: first ``{"bad": [[i, error]]}``
(regexes that do not compile here), then for each batch ``{"hits": [[line, regex, group]],
"slow": [regex, ...]}``.

Each regex gets ``budget + per_line * len(batch)`` seconds per batch. A regex over its
budget (catastrophic backtracking, say) is interrupted by SIGALRM (the regex engine checks
for signals while it backtracks), reported in ``slow`` once, and not run again.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from types import FrameType


class _OverBudget(Exception):
    pass


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise _OverBudget


def _search(
    rx: re.Pattern[str], j: int, lines: list[str], budget: float, hits: list[tuple[int, int, str]]
) -> bool:
    """Run regex ``j`` over a batch, adding its hits; False if it ran out of time."""
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        for i, line in enumerate(lines):
            m = rx.search(line)
            if m is not None and rx.groups and m.group(1) is not None:
                hits.append((i, j, m.group(1)))
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _OverBudget:
        return False
    return True


def main() -> None:
    signal.signal(signal.SIGALRM, _alarm)
    # the agent decides when this process ends (it closes stdin); a Ctrl-C is the agent's
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    header = json.loads(sys.stdin.readline())
    regexes: list[re.Pattern[str] | None] = []
    bad: list[list[object]] = []
    for j, text in enumerate(header["regexes"]):
        try:
            regexes.append(re.compile(text))
        except (re.error, TypeError) as e:
            regexes.append(None)
            bad.append([j, str(e)])
    budget = float(header["budget"])
    per_line = float(header["per_line"])
    sys.stdout.write(json.dumps({"bad": bad}) + "\n")
    sys.stdout.flush()
    for raw in sys.stdin:
        lines = json.loads(raw)
        hits: list[tuple[int, int, str]] = []
        slow: list[int] = []
        allowed = budget + per_line * len(lines)
        for j, rx in enumerate(regexes):
            if rx is not None and not _search(rx, j, lines, allowed, hits):
                regexes[j] = None
                slow.append(j)
        hits.sort()  # line order first, as the lines were printed
        sys.stdout.write(json.dumps({"hits": hits, "slow": slow}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
