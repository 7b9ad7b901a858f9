"""How fast an attempt stages its input channels, beside a plain copy of the same bytes.

Every attempt of a spot job stages its channels before training starts; on real capacity
every interruption pays it again, unless the host still holds a copy. For a ``file://``
channel and one on an S3 server (moto's, on 127.0.0.1, holding its objects in memory) of
the same shape (moto's server in a process of its own), it prints:

* the plain copy: ``cp -r`` of the folder for ``file://``; for S3, boto3's
  ``download_file`` of each object (AWS's own transfer manager: ranged parts, 10 threads);
* spotrun's first attempt on a host (``cache_channel`` + ``link_channel``, as the agent
  runs them), and its speed as a share of the plain copy's. Target: at least 0.8;
* a later attempt on the same host, which finds the verified copy and only links it.

The bytes are read once before anything is timed, so every copy reads them from memory
and the figures compare the copies, not the disk's cold reads.

    .venv/bin/python bench/staging.py [--mb 1024] [--files 1] [--s3-mb 256] [--dir D]

Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spotrun.agent.channels import cache_channel, link_channel
from spotrun.spec import Channel

TARGET = 0.8  # spotrun's first staging, as a share of a plain copy's speed
CHUNK = 8 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tree(root: Path, mb: int, files: int) -> list[Path]:
    """``files`` files of random bytes, ``mb`` MiB in all, under ``root``."""
    root.mkdir(parents=True)
    size = (mb << 20) // files
    made = []
    for i in range(files):
        path = root / f"part-{i:04d}.bin"
        with path.open("wb") as f:
            left = size
            while left:
                n = min(CHUNK, left)
                f.write(os.urandom(n))
                left -= n
        made.append(path)
    return made


def warm(paths: list[Path]) -> None:
    for p in paths:
        with p.open("rb") as f:
            while f.read(CHUNK):
                pass


def timed(run: Callable[[], object]) -> float:
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def stage(uri: str, cache: Path, dest: Path, job: str) -> tuple[float, bool]:
    """One attempt's staging of a channel, as the agent does it; (seconds, fetched)."""
    t = time.perf_counter()
    cached = cache_channel(Channel("train", uri), cache, job)
    link_channel(cached, dest)
    return time.perf_counter() - t, cached.fetched


def report(kind: str, mb: int, plain: float, first: float, again: float) -> bool:
    share = plain / first
    ok = share >= TARGET
    print(
        f"{kind}: {mb} MiB: plain copy {plain:.2f} s ({mb / plain:.0f} MiB/s); "
        f"spotrun first attempt {first:.2f} s ({mb / first:.0f} MiB/s) = {share:.2f} x the "
        f"plain copy's speed, target >= {TARGET}: {'met' if ok else 'NOT met'}; "
        f"a later attempt on the host {again * 1000:.0f} ms (reuses the verified copy)"
    )
    return ok


def bench_file(work: Path, mb: int, files: int) -> bool:
    src = work / "src"
    warm(make_tree(src, mb, files))
    plain = timed(lambda: subprocess.run(["cp", "-r", str(src), str(work / "cp")], check=True))
    shutil.rmtree(work / "cp")
    first, fetched = stage(src.as_uri(), work / "cache", work / "attempt-1", "job")
    assert fetched
    again, fetched = stage(src.as_uri(), work / "cache", work / "attempt-2", "job")
    assert not fetched
    shutil.rmtree(work / "cache")
    return report("file://", mb, plain, first, again)


def bench_s3(work: Path, mb: int, files: int) -> bool:
    import boto3

    # a process of its own: in this one, the server would share the interpreter lock with
    # the copies it serves, and the figures would measure that
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench")
        src = work / "s3src"
        for path in make_tree(src, mb, files):
            s3.upload_file(str(path), "bench", f"data/{path.name}")
        keys = [f"data/{p.name}" for p in sorted(src.iterdir())]
        plain_dir = work / "s3plain"
        plain_dir.mkdir()
        plain = timed(
            lambda: [s3.download_file("bench", k, str(plain_dir / Path(k).name)) for k in keys]
        )
        first, fetched = stage("s3://bench/data", work / "cache", work / "attempt-1", "job")
        assert fetched
        again, fetched = stage("s3://bench/data", work / "cache", work / "attempt-2", "job")
        assert not fetched
        for k in keys:  # byte for byte what was uploaded
            name = Path(k).name
            assert (work / "attempt-1" / name).read_bytes() == (src / name).read_bytes()
        return report("s3 (moto)", mb, plain, first, again)
    finally:
        server.terminate()
        server.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=1024, help="MiB of the file:// channel (1024)")
    ap.add_argument("--s3-mb", type=int, default=256, help="MiB of the S3 channel (256)")
    ap.add_argument("--files", type=int, default=1, help="files the channel is split in (1)")
    ap.add_argument("--dir", default=None, help="where to work (default: $TMPDIR)")
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="spotrun-staging-", dir=args.dir) as tmp:
        ok &= bench_file(Path(tmp, "file"), args.mb, args.files)
        ok &= bench_s3(Path(tmp, "s3"), args.s3_mb, args.files)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
