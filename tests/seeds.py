"""Seeds for the randomized tests: one fixed seed under CI, a new one elsewhere.

A randomized test takes its seed from ``draw(VARIABLE, ci=...)``:

* ``VARIABLE`` set in the environment (``SPOTRUN_RESUME_SEED=123``) replays that seed;
* under ``CI=true`` the test replays its fixed ``ci`` seed, so whether a change lands
  depends on the change and not on the draw;
* elsewhere a new seed is drawn, so local runs and ``make soak`` keep looking for cases
  no fixed seed covers.

``draw`` prints ``VARIABLE=seed``; pytest shows a failed test's output, so every failure
names the seed that replays it. Code that draws at import time (the fuzz suite) passes
``announce=False`` and names the seed in its failure messages itself.
"""

from __future__ import annotations

import os
import random

#: every variable a randomized test reads; ``make soak`` clears them all so that each
#: run draws new seeds (keep in step with the Makefile's SOAK_SEEDS)
VARIABLES = (
    "SPOTRUN_RESUME_SEED",  # tests/test_exact_resume.py
    "SPOTRUN_XGB_RESUME_SEED",  # tests/test_exact_resume_xgboost.py
    "SPOTRUN_CRASH_SEED",  # tests/test_crash_safety.py
    "SPOTRUN_KILL_SEED",  # tests/test_toolkit.py, SIGKILL at random moments
    "SPOTRUN_DDP_SEED",  # tests/test_toolkit_ddp.py
    "SPOTRUN_FUZZ_SEED",  # tests/test_fuzz.py
    "SPOTRUN_LOGS_SEED",  # tests/test_store_concurrency.py
)


def draw(variable: str, ci: int, *, announce: bool = True) -> int:
    """The seed for one randomized test; see the module docstring for where it comes from."""
    if variable not in VARIABLES:
        raise ValueError(f"{variable} is not one of the seed variables {', '.join(VARIABLES)}")
    given = os.environ.get(variable, "").strip()
    if given:
        try:
            seed = int(given)
        except ValueError:
            raise ValueError(f"{variable} must be a whole number, not {given!r}") from None
    elif os.environ.get("CI") == "true":
        seed = ci
    else:
        seed = random.SystemRandom().randrange(2**32)
    if announce:
        print(f"{note(variable, seed)}", flush=True)
    return seed


def note(variable: str, seed: int) -> str:
    """How to replay a run: the words every failure of a seeded test carries."""
    return f"replay with {variable}={seed}"
