"""``spotrun server`` in the foreground, as a deployment runs it: --host/--port, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_foreground_server_serves_signed_requests_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    home = tmp_path / "home"
    env = {**os.environ, "SPOTRUN_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotrun.cli", "server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(url + "/v1/jobs").status_code == 403  # unsigned
        # the CLI finds the foreground server through the home, and signs with its key
        cli = [sys.executable, "-m", "spotrun.cli"]
        listed = subprocess.run([*cli, "jobs"], env=env, capture_output=True, text=True)
        assert listed.returncode == 0, listed.stderr
        status = subprocess.run([*cli, "server", "status"], env=env, capture_output=True, text=True)
        assert f":{port}" in status.stdout
        # the one server of a home leads the controller, and says so
        listed_servers = [ln.split() for ln in status.stdout.splitlines() if ln.startswith("  ")]
        assert [(s[0], s[2], s[5]) for s in listed_servers] == [
            (f"http://127.0.0.1:{port}", str(proc.pid), "leader")
        ], status.stdout
        again = subprocess.run([*cli, "server"], env=env, capture_output=True, text=True)
        assert again.returncode == 2 and "already running" in again.stderr
        # even started directly, past the CLI's check, a second server for the home refuses
        direct = subprocess.run(
            [sys.executable, "-m", "spotrun.api.server", "--home", str(home), "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert direct.returncode != 0 and "another spotrun server" in direct.stderr
        # a body larger than any request is refused before it is read or checked
        big = httpx.post(url + "/", content=b"x" * (9 * 1024 * 1024))
        assert big.status_code == 413 and big.json()["error"] == "RequestEntityTooLarge"
        # and so is one of no stated length (its size is known only once read)
        chunked = httpx.post(url + "/", content=iter([b"{}", b"{}"]))
        assert chunked.status_code == 411 and chunked.json()["error"] == "LengthRequired"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "created access key" in out and f"listening on http://127.0.0.1:{port}" in out
    assert not (home / "service.json").exists()


def test_a_server_that_exited_unreaped_is_not_taken_for_a_running_one() -> None:
    """A server started by one process and stopped from another stays a zombie until its
    parent reaps it; `spotrun server stop` must not wait for it to die again (it used to
    wait its whole 30 s and then SIGKILL it)."""
    from spotrun.cli.client import _pid_alive

    # `true` exits at once; its parent, exec'd into `sleep`, never reaps it
    parent = subprocess.Popen(["sh", "-c", "true & exec sleep 30"])
    try:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split():
            assert time.monotonic() < deadline, "the child never appeared"
            time.sleep(0.01)
        (zombie,) = map(int, children.read_text().split())
        while "Z" not in Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1][:3]:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        os.kill(zombie, 0)  # it still has a pid...
        assert not _pid_alive(zombie)  # ...but runs no more
        assert _pid_alive(parent.pid)
    finally:
        parent.kill()
        parent.wait()
