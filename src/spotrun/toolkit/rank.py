"""Start one torchrun rank of a job's script: ``python -m spotrun.toolkit.rank SCRIPT ARGS…``.

spotrun runs a data-parallel script as ``torchrun … -m spotrun.toolkit.rank SCRIPT ARGS``.
Two things a rank started directly by torchrun lacks, this adds before it runs the script
exactly as ``python SCRIPT ARGS`` would (``__main__``, ``sys.argv``, the script's folder
first on ``sys.path``):

- It dies with torchrun. torchrun starts every rank in a session of its own, so the signals
  the agent sends to the training's process group reach torchrun only; a torchrun killed
  hard would otherwise leave its ranks running, training on and writing into a checkpoint
  folder the next attempt owns. The kernel's parent-death signal (Linux) closes that gap.
- A rank that fails with an exception records it in ``$SM_OUTPUT_DIR/failure`` (the first
  rank to fail wins), which becomes the job's failure reason, as SageMaker's training
  toolkit does. Otherwise the reason would be the last line of torchrun's summary box.
- A rank whose script ended (returned, or called ``sys.exit``) leaves without tearing the
  interpreter down. Gloo's worker threads outlive ``destroy_process_group`` and may still be
  letting go of a collective's tensors when the main thread finalizes Python; a thread that
  needs the interpreter then is ended mid-C++ and the rank aborts ("terminate called without
  an active exception", SIGABRT) after its checkpoint was saved, turning a finished run into
  a failed one. So the rank does what a normal exit does first (wait for non-daemon threads,
  run the ``atexit`` hooks, flush output) and then ends the process at once.

Standard library only, like the rest of the toolkit: it runs in every rank before the
script.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import runpy
import signal
import sys
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1
#: what a failure file may hold (SageMaker truncates FailureReason at 1024 characters)
FAILURE_LIMIT = 1024


def die_with_parent() -> None:
    """Ask for SIGKILL when the parent (torchrun) exits; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    name = ctypes.util.find_library("c")
    if name is not None:
        ctypes.CDLL(name, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request was in place
        os._exit(1)


def record_failure(error: BaseException) -> None:
    """Write ``error`` to the failure file unless another rank got there first."""
    output = os.environ.get("SM_OUTPUT_DIR")
    if not output:
        return
    rank = os.environ.get("RANK", "?")
    text = f"AlgorithmError: rank {rank}: {type(error).__name__}: {error}"[:FAILURE_LIMIT]
    try:
        fd = os.open(Path(output) / "failure", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return  # another rank's failure is already recorded, or there is nowhere to write
    with os.fdopen(fd, "w") as f:
        f.write(text)


def exit_code(error: SystemExit) -> int:
    """The status ``sys.exit(value)`` gives the process (a message is printed, status 1)."""
    value = error.code
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF  # what the kernel keeps of exit(value)
    print(value, file=sys.stderr)
    return 1


def leave(code: int) -> None:
    """End the process with ``code`` after what a normal exit does before finalizing."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or gone: nothing to save
            stream.flush()
    os._exit(code)


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m spotrun.toolkit.rank SCRIPT [ARGS...]")
    die_with_parent()
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = str(Path(script).resolve().parent)  # what `python SCRIPT` puts first
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        leave(exit_code(e))
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        record_failure(e)
        raise
    leave(0)


if __name__ == "__main__":
    main(sys.argv[1:])
