"""The built wheel works on its own: installed into a fresh venv, far from this checkout.

The wheel is built from the checkout (a copy of it, so the build leaves nothing behind) and
installed with its runtime dependencies only (no torch, no development tools) into a new
virtual environment under a temporary folder. Everything then runs there, with a clean
environment (no PYTHONPATH, no SPOTRUN_DATA, a home of its own), so only what the wheel
carries can be used: its modules, its Alembic migrations, its market data. The installed
``spotrun`` command starts a server, runs a standard-library script that checkpoints with
``spotrun.toolkit.Checkpointer`` as a spot job, interrupts it with ``spotrun interrupt`` and
checks that it resumed from its checkpoint, completed and uploaded its model.

No package index is reached: the runtime dependencies come from the wheels ``make test``
downloads into ``<venv>/wheelhouse`` when it installs the development venv.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
JOB = "wheel-job"
STEPS = 8
HOLD_AT = 3

# Files in the source package that an installed spotrun never reads: Alembic's template
# for writing a new migration.
NOT_SHIPPED = {"spotrun/store/migrations/script.py.mako"}

SCRIPT = rf"""
import json, os, sys, time
from pathlib import Path

import spotrun.toolkit
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer

print(f"toolkit from {{spotrun.toolkit.__file__}}", flush=True)
steps = int(sys.argv[sys.argv.index("--steps") + 1])
ckpt = Checkpointer()
last = ckpt.latest()
step = last.load()["step"] if last else 0
print(f"resumed from checkpoint at step {{step}}" if last else "starting fresh", flush=True)
while step < steps:
    step += 1
    print(f"step {{step}}", flush=True)
    if last is None and step == {HOLD_AT}:
        # The first attempt waits here for the interruption the test sends once it sees
        # this line, so the test depends on events, not on how fast either side runs.
        print("waiting for the interruption", flush=True)
        deadline = time.monotonic() + 120
        while not ckpt.interrupted and time.monotonic() < deadline:
            time.sleep(0.05)
    if ckpt.interrupted:
        ckpt.save({{"step": step}}, step)
        print(f"checkpointed at step {{step}}", flush=True)
        sys.exit(EXIT_CHECKPOINTED)
    if last is None and step == {HOLD_AT}:
        sys.exit("no interruption arrived")
    time.sleep(0.02)
model = Path(os.environ["SM_MODEL_DIR"])
(model / "model.json").write_text(json.dumps({{"steps": step}}))
ckpt.finish()
print("done", flush=True)
"""

# One spot pool that always has capacity: the only interruption is the one the test sends.
MARKET = """
time_scale = 1
notice_lead_seconds = 2
region = "us-east-1"

[[pools]]
instance_type = "c5.xlarge"
process = "always"
"""


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> str:
    """Run ``cmd``; its output, or a failure that shows it."""
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (cmd, done.returncode, done.stdout, done.stderr)
    return done.stdout


def build_wheel(out: Path) -> Path:
    """A wheel built from a copy of the checkout (the build writes build/ and egg-info
    beside the sources), through setuptools' PEP 517 hook in this venv: what pip or
    ``python -m build`` call, without the seconds an isolated build environment costs."""
    source = out / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    hook = (
        "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    )
    built = run([sys.executable, "-c", hook, str(out / "dist")], dict(os.environ), source)
    wheel = out / "dist" / built.strip().splitlines()[-1]
    assert wheel.name.startswith("spotrun-") and wheel.suffix == ".whl", wheel
    return wheel


def check_contents(wheel: Path) -> None:
    """Every file of the source package is in the wheel: modules, migrations, data."""
    with zipfile.ZipFile(wheel) as z:
        shipped = set(z.namelist())
    package = REPO / "src" / "spotrun"
    expected = {
        f"spotrun/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } - NOT_SHIPPED
    missing = sorted(expected - shipped)
    assert not missing, f"the wheel lacks {missing}: add them to package-data in pyproject.toml"
    for must in ("spotrun/py.typed", "spotrun/store/migrations/env.py"):
        assert must in shipped, must
    assert any(n.startswith("spotrun/store/migrations/versions/0001") for n in shipped)


def clean_env(venv: Path, root: Path) -> dict[str, str]:
    """Only what a user's shell would have: no PYTHONPATH, no SPOTRUN_DATA, no pip config."""
    return {
        "PATH": os.pathsep.join([str(venv / "bin"), "/usr/local/bin", "/usr/bin", "/bin",
                                 "/usr/sbin", "/sbin"]),
        "HOME": str(root / "user"),
        "SPOTRUN_HOME": str(root / "spotrun-home"),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }  # fmt: skip


class Lines:
    """The lines a process prints, as they come, to wait on one of them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r} in:\n" + "\n".join(self.seen)
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"ended before {pattern!r}:\n" + "\n".join(self.seen)
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def rest(self, timeout: float) -> list[str]:
        """Every line, once the process closed its output."""
        try:
            while (line := self._queue.get(timeout=timeout)) is not None:
                self.seen.append(line)
        except queue.Empty:
            raise AssertionError("still printing:\n" + "\n".join(self.seen)) from None
        return self.seen


def test_wheel_installed_alone_runs_a_spot_job_through_an_interruption(tmp_path: Path) -> None:
    assert WHEELHOUSE.is_dir(), (
        f"{WHEELHOUSE} is missing: `make test` downloads the runtime dependencies there"
    )
    assert not any((p / "shared" / "data").exists() for p in tmp_path.parents), (
        f"{tmp_path} lies under a shared/data folder, which spotrun could read"
    )
    wheel = build_wheel(tmp_path / "build")
    check_contents(wheel)

    root = tmp_path / "alone"
    venv, work = root / "venv", root / "work"
    for folder in (root / "user", root / "tmp", work):
        folder.mkdir(parents=True)
    env = clean_env(venv, root)
    # without pip of its own (ensurepip takes many seconds): this venv's pip installs into it
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env, work)
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python]
    # --no-compile: byte-compiling every dependency takes longer than all the rest under
    # load; Python compiles what it imports on first use instead
    run(
        [*pip, "install", "--quiet", "--no-compile", "--no-index", "--find-links",
         str(WHEELHOUSE), "-c", str(REPO / "constraints.txt"), str(wheel)],
        env, work, timeout=300,
    )  # fmt: skip
    where = run([python, "-c", "import spotrun; print(spotrun.__file__)"], env, work).strip()
    assert Path(where).is_relative_to(venv), where
    installed = json.loads(run([*pip, "list", "--format", "json"], env, work))
    names = {p["name"].lower() for p in installed}
    assert {"spotrun", "fastapi", "sqlalchemy"} <= names, names
    # Optuna (tuning jobs) brings numpy; nothing else of the ML stack comes with the server
    assert {"optuna", "numpy"} <= names, names
    assert "jinja2" in names, names  # the console's pages
    assert not names & {"torch", "scikit-learn", "xgboost-cpu", "pytest", "boto3"}, names

    (work / "train.py").write_text(SCRIPT)
    (work / "market.toml").write_text(MARKET)
    spotrun = str(venv / "bin" / "spotrun")
    run([spotrun, "server", "start", "--market", "market.toml", "--stop-grace", "5"], env, work)
    followed = False
    try:
        job = subprocess.Popen(
            [spotrun, "run", "train.py", "--name", JOB, "--spot",
             "--instance-type", "ml.c5.xlarge", "--max-run", "10m", "--max-wait", "1h",
             "--hp", f"steps={STEPS}", "--output", (root / "output").as_uri()],
            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            lines = Lines(job)
            lines.wait_for(r"^\[algo-1#1\] waiting for the interruption$", timeout=120)
            run([spotrun, "interrupt", JOB, "--lead", "2"], env, work)
            lines.wait_for(r"^\[algo-1#\d+\] done$", timeout=150)
            log = lines.rest(timeout=60)  # spotrun run prints every line of the job's log
            assert job.wait(timeout=60) == 0, "\n".join(log)
            followed = True
        finally:
            if job.poll() is None:
                job.kill()
                job.wait()
        described: dict[str, Any] = json.loads(run([spotrun, "describe", JOB, "--json"], env, work))
        # the console's templates and vendored scripts are in the wheel, and a link logs in
        printed = re.search(r"(http://\S+/console/login/\S+)", run([spotrun, "console"], env, work))
        assert printed is not None
        link = printed[1]
        with httpx.Client(follow_redirects=True) as browser:
            ask = browser.get(link)
            token = re.search(r'name="token" value="([^"]+)"', ask.text)
            assert token is not None, ask.text[:300]
            page = browser.post(link, data={"token": token[1]})
            assert page.status_code == 200 and JOB in page.text, page.text[:300]
            base = link.split("/console/")[0]
            for script in ("vendor/htmx.min.js", "vendor/chart.umd.min.js", "console.js"):
                assert browser.get(f"{base}/console/static/{script}").status_code == 200
    finally:
        # instances outlive their server (it re-adopts them when it starts again): a job
        # left running by a failure is stopped first
        if not followed:
            subprocess.run([spotrun, "stop", JOB, "--wait"], cwd=work, env=env, timeout=60)
        run([spotrun, "server", "stop"], env, work)

    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["Spotrun"]["Interruptions"] >= 1, described["Spotrun"]
    statuses = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses and statuses[-1] == "Completed", statuses
    toolkit = [line.split("toolkit from ", 1)[1] for line in log if "toolkit from " in line]
    assert toolkit and all(Path(t).is_relative_to(venv) for t in toolkit), toolkit
    assert f"[algo-1#1] checkpointed at step {HOLD_AT}" in log, log
    resumed = [line for line in log if "resumed from checkpoint" in line]
    assert resumed and resumed[0].endswith(f"resumed from checkpoint at step {HOLD_AT}"), log
    artifact = Path(described["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"))
    with tarfile.open(artifact) as tar:
        member = tar.extractfile("model.json")
        assert member is not None
        assert json.loads(member.read()) == {"steps": STEPS}
