"""What README.md says the ``spotrun`` command does, checked by running the command.

Each test drives the real ``spotrun`` entry point (the one in the virtual environment's
``bin``) against a real server, with small standard-library scripts so that each is quick:
``run`` following a job, the limits it fills in, Ctrl-C in a terminal detaching it,
``logs -f``, ``stop --wait``, ``interrupt --wait``, ``keys env`` for boto3, and
``SPOTRUN_ENDPOINT`` with a key from ``keys create``. The last tests check the README's own
``spotrun run`` examples and run them as written (made short: one epoch), so the README
cannot drift from what works.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sagemaker_server import SCRIPT, Server
from spotrun.cli import render
from spotrun.cli.client import Client, service_info, stop_service
from spotrun.cli.main import _merge, build_request, parser
from spotrun.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SPOTRUN = str(BIN / "spotrun")
SPOT = ("--spot", "--instance-type", "ml.c5.2xlarge", "--max-wait", "10m")  # never reclaimed
LOG_LINE = re.compile(r"^\[[^\]#]+#\d+\] ")

# ignores SIGTERM, so a stop takes the whole grace period (3 s on the test server)
STUBBORN = r"""
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
step = 0
while True:
    step += 1
    print(f"step {step}", flush=True)
    time.sleep(0.1)
"""

FAILING = r"""
print("reading the channel", flush=True)
raise SystemExit("no usable rows in the train channel")
"""

# trains until its first interruption (so a test's interrupt never finds it finished),
# checkpoints on SIGTERM, and once resumed trains 5 more steps
UNTIL_INTERRUPTED = r"""
import os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
state = ck / "step.txt"
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
resumed = state.exists()
step = int(state.read_text()) if resumed else 0
print(f"resumed from step {step}" if resumed else "starting fresh", flush=True)
end = step + 5 if resumed else None
while end is None or step < end:
    if stop:
        state.write_text(str(step))
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75)
    time.sleep(0.1)
    step += 1
    print(f"step {step}", flush=True)
print("done", flush=True)
"""

# the same, but it cannot go on from a checkpoint
NO_RESUME = (
    r"""
import os, pathlib, sys
ck = pathlib.Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
if (ck / "step.txt").exists():
    sys.exit("this script cannot resume")
"""
    + UNTIL_INTERRUPTED
)

BURST = r"""
for i in range(1, 2501):
    print(f"line {i:04d}")
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("cli-readme"))
    scripts = {
        "stubborn.py": STUBBORN,
        "failing.py": FAILING,
        "until_interrupted.py": UNTIL_INTERRUPTED,
        "no_resume.py": NO_RESUME,
        "burst.py": BURST,
    }
    for name, text in scripts.items():
        (s.root / "code" / name).write_text(text)
    yield s
    # instances outlive their server (it re-adopts them): end what a failed test left running
    client = api(s)
    for job in client.jobs(status="InProgress"):
        client.stop(job["TrainingJobName"])
    wait_until(lambda: not client.jobs(status="InProgress"), "the jobs to stop", timeout=60)
    stop_service(s.settings)


def script(server: Server, name: str = "train.py") -> str:
    return str(server.root / "code" / name)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTRUN_")}
    return {**env, "SPOTRUN_HOME": str(home), **extra}


def spotrun(
    server: Server, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPOTRUN, *args],
        env=env or cli_env(server.settings.home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def api(server: Server) -> Client:
    return Client(server.url, *server.key)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def log_lines(client: Client, name: str) -> list[str]:
    """Every log line of the job as the CLI prints it: ``[host#generation] line``."""
    out: list[str] = []
    after = 0
    while True:
        chunk = client.logs(name, after=after)
        out += [f"[{x['host']}#{x['generation']}] {x['line']}" for x in chunk["lines"]]
        if not chunk["lines"]:
            return out
        after = chunk["next"]


def logged(client: Client, name: str, start: str) -> Callable[[], bool]:
    """Whether the job has logged a line starting with ``start``."""
    return lambda: any(x.split("] ", 1)[1].startswith(start) for x in log_lines(client, name))


def printed_log(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if LOG_LINE.match(line)]


# -- spotrun run -------------------------------------------------------------------------


def test_run_prints_each_transition_and_log_line_then_the_summary(server: Server) -> None:
    out = spotrun(server, "run", script(server), "--name", "run-ok", *SPOT, "--hp", "steps=5")
    assert out.returncode == 0, out.stderr
    d = api(server).describe("run-ok")
    assert d["TrainingJobStatus"] == "Completed"
    lines = out.stdout.splitlines()
    # every status transition, once each and in order (as first seen: a transition's
    # message may be updated while it lasts, and is then printed as "… message")
    heads = [
        f"[spotrun] {render.clock(t['StartTime'])} {t['Status']} - "
        for t in d["SecondaryStatusTransitions"]
    ]
    printed = [x for x in lines if re.match(r"\[spotrun\] \d{4}-\d\d-\d\d ", x)]
    assert [x[: len(h)] for x, h in zip(printed, heads, strict=True)] == heads, out.stdout
    # every log line, once each and in order
    log = log_lines(api(server), "run-ok")
    assert [x.split("] ", 1)[1] for x in log] == [
        "starting fresh",
        *(f"step {i} loss={1 / i:.4f}" for i in range(1, 6)),
        "done",
    ]
    assert printed_log(out.stdout) == log
    # then the job's summary, last
    assert out.stdout.rstrip("\n").endswith(render.summary(d)), out.stdout[-2000:]
    # in the order they happened: the job started, printed its lines, then ended; also
    # when one poll sees it all (following the finished job again), where the order
    # cannot come from the polls
    again = spotrun(server, "logs", "-f", "run-ok")
    assert again.returncode == 0, again.stderr
    assert printed_log(again.stdout) == log
    for text in (out.stdout, again.stdout):
        shown = text.splitlines()
        starting = next(i for i, x in enumerate(shown) if " Starting - " in x)
        uploading = next(i for i, x in enumerate(shown) if " Uploading - " in x)
        assert starting < shown.index(log[0]) < shown.index(log[-1]) < uploading, text


def test_run_of_a_failing_job_ends_with_its_reason_and_exit_code_1(server: Server) -> None:
    out = spotrun(server, "run", script(server, "failing.py"), "--name", "run-fail", *SPOT)
    assert out.returncode == 1, (out.stdout, out.stderr)
    d = api(server).describe("run-fail")
    assert d["TrainingJobStatus"] == "Failed"
    # its stdout and stderr lines, in the log's order, then the summary with the reason
    log = log_lines(api(server), "run-fail")
    assert "[algo-1#1] reading the channel" in log
    assert "[algo-1#1] no usable rows in the train channel" in log
    assert printed_log(out.stdout) == log
    assert out.stdout.rstrip("\n").endswith(render.summary(d)), out.stdout[-2000:]
    assert "Status           Failed / Failed" in out.stdout
    reason = re.search(r"^Failure reason +(.*)$", out.stdout, re.M)
    assert reason is not None and "no usable rows in the train channel" in reason.group(1)


def test_follow_puts_transitions_among_lines_that_keep_the_log_order() -> None:
    # stdout and stderr are read apart, so a later log line may carry an earlier time
    lines = [(10.0, "out 1"), (9.5, "err 1"), (11.0, "out 2"), (13.0, "out 3")]
    transitions = [(8.0, "Training"), (12.0, "Uploading"), (14.0, "Completed")]
    assert _merge(transitions, lines) == [
        *("Training", "out 1", "err 1", "out 2"),
        *("Uploading", "out 3", "Completed"),
    ]


@pytest.mark.parametrize(
    ("given", "limits"),
    [
        (("--spot", "--max-wait", "1h"), (3600, 3600)),  # the README's DDP example
        (("--spot", "--max-run", "30m"), (1800, 1800)),
        (("--spot",), (86400, 86400)),
        (("--spot", "--max-run", "30m", "--max-wait", "1h"), (1800, 3600)),
        (("--spot", "--max-run", "1h", "--max-wait", "60m"), (3600, 3600)),
        ((), (86400, None)),
        (("--max-run", "2h"), (7200, None)),
    ],
)
def test_run_fills_the_limit_left_out(
    given: tuple[str, ...], limits: tuple[int, int | None], tmp_path: Path
) -> None:
    args = parser().parse_args(["run", "train.py", *given])
    stopping = build_request(args, load_settings(tmp_path / "home"))["StoppingCondition"]
    assert (stopping["MaxRuntimeInSeconds"], stopping.get("MaxWaitTimeInSeconds")) == limits


def test_run_refuses_conflicting_limits_and_submits_nothing(server: Server) -> None:
    out = spotrun(server, "run", script(server), "--name", "limits", "--spot",
                  "--max-run", "2h", "--max-wait", "1h")  # fmt: skip
    assert out.returncode == 2, out.stdout
    assert out.stderr == (
        "spotrun: error: --max-wait: 1h is shorter than --max-run 2h; a spot job's wait "
        "includes its run time, so give --max-wait 2h or more, or a shorter --max-run\n"
    )
    zero = spotrun(server, "run", script(server), "--name", "limits", "--max-run", "0.2s")
    assert zero.returncode == 2, zero.stdout
    assert (
        zero.stderr == "spotrun: error: --max-run: '0.2s' is shorter than the smallest limit, 1s\n"
    )
    assert "limits" not in [j["TrainingJobName"] for j in api(server).jobs()]


# -- Ctrl-C detaches ---------------------------------------------------------------------

# makes the terminal it was given its controlling terminal, then runs the command: the
# terminal then sends SIGINT on Ctrl-C to the command's process group, as a shell's would
CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


class Terminal:
    """A command on a pseudo-terminal of its own, as a user's shell runs it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TTY, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,  # a session of its own, so the terminal can be its own
            # a shell gives its commands SIGINT's default handling; a test run started in
            # the background of a non-interactive shell inherits it ignored, and Ctrl-C
            # would then do nothing
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(slave)
        self.text = ""

    def read_until(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while re.search(pattern, self.text, re.M) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal:\n{self.text}"
            if not self._read(left):
                raise AssertionError(f"the terminal closed without {pattern!r}:\n{self.text}")
        return self.text

    def read_to_end(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            assert time.monotonic() < deadline, f"the command did not end:\n{self.text}"
        return self.text

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: every process holding the terminal has exited
            return False
        self.text += data.decode(errors="replace").replace("\r\n", "\n")
        return bool(data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def test_ctrl_c_detaches_run_and_the_job_runs_to_completion(tmp_path: Path) -> None:
    # a fresh home: `spotrun run` starts the server itself, in the terminal's session
    home = tmp_path / "home"
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    env = cli_env(home)
    term = Terminal(
        [
            SPOTRUN,
            "run",
            str(code / "train.py"),
            "--name",
            "ctrl-c",
            "--spot",
            "--max-wait",
            "10m",
            "--hp",
            "steps=30",
        ],
        env,
    )
    try:
        term.read_until(r"^\[algo-1#1\] step 3 ", timeout=120)
        os.write(term.master, b"\x03")  # the interrupt character: Ctrl-C
        text = term.read_to_end(timeout=30)
        rc = term.proc.wait(timeout=30)
    finally:
        term.close()
    try:
        assert rc == 130, text
        assert "detached; ctrl-c keeps running" in text, text
        assert "Reattach with `spotrun logs -f ctrl-c`" in text, text
        # the job was not stopped by the Ctrl-C: reattaching follows it to its end
        again = subprocess.run(
            [SPOTRUN, "logs", "-f", "ctrl-c"], env=env, capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.rstrip().endswith("ctrl-c: Completed / Completed"), again.stdout
        steps = [x for x in printed_log(again.stdout) if re.match(r"\[algo-1#1\] step \d+ ", x)]
        assert len(steps) == 30 and printed_log(again.stdout)[-1] == "[algo-1#1] done"
    finally:
        stop_service(load_settings(home))


# -- logs -f, stop --wait, interrupt --wait ----------------------------------------------


def test_logs_follow_prints_every_line_once_across_an_interruption(server: Server) -> None:
    client = api(server)
    sub = spotrun(
        server, "run", script(server, "until_interrupted.py"), "--name", "follow", *SPOT, "--detach"
    )
    assert sub.returncode == 0, sub.stderr
    follower = subprocess.Popen(
        [SPOTRUN, "logs", "-f", "follow"],
        env=cli_env(server.settings.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(logged(client, "follow", "step 5"), "step 5")
        client.interrupt("follow", lead_seconds=1)
        out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    d = client.describe("follow")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert out.rstrip().endswith("[spotrun] follow: Completed / Completed"), out[-1000:]
    log = log_lines(client, "follow")
    assert printed_log(out) == log  # each line once, in order, both attempts
    assert {x.split("] ")[0] for x in log} == {"[algo-1#1", "[algo-1#2"}, log


def test_logs_print_every_line_once_past_a_page(server: Server) -> None:
    sub = spotrun(server, "run", script(server, "burst.py"), "--name", "burst", *SPOT, "--detach")
    assert sub.returncode == 0, sub.stderr
    followed = spotrun(server, "logs", "-f", "burst")
    assert followed.returncode == 0, followed.stderr
    expected = [f"[algo-1#1] line {i:04d}" for i in range(1, 2501)] + ["[algo-1#1] done"]
    assert printed_log(followed.stdout) == expected
    again = spotrun(server, "logs", "burst")  # the whole log of a finished job
    assert again.returncode == 0, again.stderr
    assert printed_log(again.stdout) == expected


def test_stop_wait_returns_once_the_job_is_stopped(server: Server) -> None:
    client = api(server)
    sub = spotrun(
        server, "run", script(server, "stubborn.py"), "--name", "stop-wait", *SPOT, "--detach"
    )
    assert sub.returncode == 0, sub.stderr
    wait_until(logged(client, "stop-wait", "step 2"), "step 2")
    out = spotrun(server, "stop", "stop-wait", "--wait")
    # the script ignores SIGTERM, so the job is Stopping for the 3 s grace, then Stopped
    d = client.describe("stop-wait")
    assert out.returncode == 0, out.stderr
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert out.stdout.splitlines()[0] == "[spotrun] stopping stop-wait"
    assert out.stdout.splitlines()[-1] == "[spotrun] stop-wait: Stopped / Stopped"


def test_interrupt_wait_follows_the_job_until_it_completes(server: Server) -> None:
    client = api(server)
    sub = spotrun(
        server,
        "run",
        script(server, "until_interrupted.py"),
        "--name",
        "int-wait",
        *SPOT,
        "--detach",
    )
    assert sub.returncode == 0, sub.stderr
    wait_until(logged(client, "int-wait", "step 3"), "step 3")
    out = spotrun(server, "interrupt", "int-wait", "--lead", "1", "--wait")
    d = client.describe("int-wait")  # at once: --wait returned only when the job ended
    assert out.returncode == 0, out.stderr
    assert (d["TrainingJobStatus"], d["Spotrun"]["Interruptions"]) == ("Completed", 1)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[spotrun] int-wait: notice served on "), lines
    assert any(" Interrupted - " in x for x in lines), lines
    assert lines[-1] == "[spotrun] int-wait: Completed / Completed", lines
    assert logged(client, "int-wait", "resumed from step")()


def test_interrupt_wait_exits_1_when_the_job_does_not_resume(server: Server) -> None:
    client = api(server)
    sub = spotrun(
        server,
        "run",
        script(server, "no_resume.py"),
        "--name",
        "int-fail",
        *SPOT,
        "--detach",
    )
    assert sub.returncode == 0, sub.stderr
    wait_until(logged(client, "int-fail", "step 3"), "step 3")
    out = spotrun(server, "interrupt", "int-fail", "--lead", "1", "--wait")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stdout.splitlines()[-1] == "[spotrun] int-fail: Failed / Failed", out.stdout
    assert "cannot resume" in client.describe("int-fail")["FailureReason"]


# -- boto3 through `keys env`, and the CLI through SPOTRUN_ENDPOINT -----------------------

BOTO3_SCRIPT = r"""
import json, sys
import boto3
sm, logs = boto3.client("sagemaker"), boto3.client("logs")
# the endpoints come from the environment; never let a mistake reach the real AWS
for c in (sm, logs):
    assert c.meta.endpoint_url.startswith("http://127.0.0.1:"), c.meta.endpoint_url
names = [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]]
d = sm.describe_training_job(TrainingJobName=sys.argv[1])
streams = logs.describe_log_streams(
    logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=sys.argv[1] + "/"
)["logStreams"]
print(json.dumps({"names": names, "status": d["TrainingJobStatus"],
                  "streams": [s["logStreamName"] for s in streams]}))
"""


def test_keys_env_evaluated_in_a_shell_is_what_boto3_uses(server: Server, tmp_path: Path) -> None:
    sub = spotrun(server, "run", script(server), "--name", "for-boto3", *SPOT, "--hp", "steps=2")
    assert sub.returncode == 0, sub.stderr
    (tmp_path / "boto3_jobs.py").write_text(BOTO3_SCRIPT)
    # a shell with spotrun on its PATH, no AWS settings of its own, and no AWS config files
    env = {k: v for k, v in cli_env(server.settings.home).items() if not k.startswith("AWS_")}
    env.update(
        PATH=f"{BIN}:/usr/bin:/bin",
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )
    shell = 'eval "$(spotrun keys env)" && exec python boto3_jobs.py for-boto3'
    out = subprocess.run(
        ["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert sorted(seen["names"]) == sorted(j["TrainingJobName"] for j in api(server).jobs())
    assert "for-boto3" in seen["names"] and seen["status"] == "Completed", seen
    assert len(seen["streams"]) == 1 and seen["streams"][0].startswith("for-boto3/algo-1"), seen


def _created_key(text: str) -> tuple[str, str]:
    key = re.search(r"^access key id: +(\S+)$", text, re.M)
    secret = re.search(r"^secret access key: +(\S+)$", text, re.M)
    assert key is not None and secret is not None, text
    return key.group(1), secret.group(1)


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[Path]:
    """A home with no server and no credentials file (a laptop's)."""
    home = tmp_path / "laptop"
    yield home
    stop_service(load_settings(home))  # were SPOTRUN_ENDPOINT ignored, one would run here


def test_endpoint_mode_talks_to_a_server_in_another_home(server: Server, elsewhere: Path) -> None:
    created = spotrun(server, "keys", "create", "--description", "a laptop")
    assert created.returncode == 0, created.stderr
    key, secret = _created_key(created.stdout)
    remote = cli_env(
        elsewhere,
        SPOTRUN_ENDPOINT=server.url,
        SPOTRUN_ACCESS_KEY_ID=key,
        SPOTRUN_SECRET_ACCESS_KEY=secret,
    )
    out = spotrun(
        server, "run", script(server), "--name", "remote", *SPOT, "--hp", "steps=2", env=remote
    )
    assert out.returncode == 0, out.stderr
    assert "Status           Completed / Completed" in out.stdout
    listed = spotrun(server, "jobs", "--json", env=remote)
    assert "remote" in [j["TrainingJobName"] for j in json.loads(listed.stdout)]
    # it ran on that server; no server was started in the other home
    d = api(server).describe("remote")
    assert d["TrainingJobStatus"] == "Completed"
    server_files = ("service.json", "server.lock", "credentials.json", "master.key", "spotrun.db")
    assert not [f for f in server_files if (elsewhere / f).exists()], list(elsewhere.iterdir())
    # the script went as a path, and the output defaults to this home's: paths the server
    # can reach only on a shared filesystem (which this machine is)
    model = elsewhere / "output" / "remote" / "output" / "model.tar.gz"
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == model.as_uri() and model.exists()

    # a wrong secret, or a key the server does not know, is refused: the error names the
    # server, its reason, the key and where it came from; and nothing is submitted
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown = "AKIA" + "Z" * (len(key) - 4)
    for access, wrong_secret, code in (
        (key, flipped, "InvalidSignatureException"),
        (unknown, secret, "UnrecognizedClientException"),
    ):
        wrong = {
            **remote,
            "SPOTRUN_ACCESS_KEY_ID": access,
            "SPOTRUN_SECRET_ACCESS_KEY": wrong_secret,
        }
        for args in (("jobs",), ("run", script(server), "--name", "remote-wrong", *SPOT)):
            refused = spotrun(server, *args, env=wrong)
            assert refused.returncode == 2, (refused.stdout, refused.stderr)
            first = refused.stderr.splitlines()[0]
            assert first.startswith(f"spotrun: error: refused by {server.url}: {code}: "), first
            assert first.endswith(
                f"(signed with access key {access} from SPOTRUN_ACCESS_KEY_ID and "
                "SPOTRUN_SECRET_ACCESS_KEY)"
            ), first
    assert "remote-wrong" not in [j["TrainingJobName"] for j in api(server).jobs()]
    # and without a key at all, the error says which variables to set
    bare = cli_env(elsewhere, SPOTRUN_ENDPOINT=server.url)
    missing = spotrun(server, "jobs", env=bare)
    assert missing.returncode == 2
    assert "SPOTRUN_ACCESS_KEY_ID and SPOTRUN_SECRET_ACCESS_KEY" in missing.stderr


# -- the README's own `spotrun run` commands ---------------------------------------------


def readme_commands() -> list[str]:
    """The commands of the code block in README.md's "Using it" section, with backslash
    continuations joined and trailing comments dropped."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 2)[1]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split("  #", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


def readme_runs() -> tuple[list[str], list[str]]:
    """The commands that prepare and run the README's examples (those before the first
    other ``spotrun`` command), and the ``spotrun run`` ones among them."""
    commands = readme_commands()
    end = next(
        i
        for i, c in enumerate(commands)
        if c.startswith("spotrun ") and not c.startswith("spotrun run ")
    )
    runs = [c for c in commands[:end] if c.startswith("spotrun run ")]
    assert len(runs) >= 2, commands
    return commands[:end], runs


def test_readme_run_commands_make_valid_requests(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home")
    for command in readme_runs()[1]:
        assert "/path/to" not in command  # nothing a reader must replace
        args = parser().parse_args(shlex.split(command)[1:])
        request = build_request(args, settings)  # raises SpecError for conflicting limits
        stopping = request["StoppingCondition"]
        assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"], command


def home_client(home: Path) -> Client:
    """A client for the server of ``home``, signed with the home's own key."""
    settings = load_settings(home)
    info = service_info(settings)
    assert info is not None, f"no server for {home}"
    cred = json.loads((home / "credentials.json").read_text())
    url = f"http://{info['host']}:{info['port']}"
    return Client(url, cred["access_key_id"], cred["secret_access_key"])


@pytest.mark.torch
def test_readme_run_commands_work_as_written(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    # a fresh checkout (the examples as committed, no prepared data) and a fresh home
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "examples",
        checkout / "examples",
        ignore=shutil.ignore_patterns("data", "__pycache__"),
    )
    home = tmp_path / "home"
    env = {**cli_env(home), "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    commands, runs = readme_runs()
    try:
        for command in commands:
            if command.startswith("spotrun run "):
                command += " --hp epochs=1"  # short: one epoch each
            out = subprocess.run(
                ["bash", "-c", command],
                cwd=checkout,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert out.returncode == 0, (command, out.stdout[-3000:], out.stderr[-3000:])
            if command.startswith("spotrun run "):
                assert "Status           Completed / Completed" in out.stdout, out.stdout[-3000:]
                assert re.search(r"final test_accuracy=0\.\d+", out.stdout), out.stdout[-3000:]
        client = home_client(home)
        jobs = client.jobs()
        assert len(jobs) == len(runs), jobs
        for job, command in zip(jobs, runs, strict=True):
            d = client.describe(job["TrainingJobName"])
            assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
            assert d["EnableManagedSpotTraining"] is ("--spot" in shlex.split(command)), command
    finally:
        stop_service(load_settings(home))
