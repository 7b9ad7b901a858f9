"""A folder's objects are fetched several at a time, byte for byte, and a fetch that fails
leaves nothing a reader could take for a whole file."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from spotrun.storage import StorageError, download_tree, filesystem
from spotrun.storage import _transfer as transfer


def _put(s3: dict[str, str], prefix: str, n: int) -> dict[str, bytes]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL_S3"])
    want = {}
    for i in range(n):
        rel = f"d{i % 3}/part-{i:02d}.bin"
        want[rel] = os.urandom(5000 + i)
        client.put_object(Bucket="sdk-bucket", Key=f"{prefix}/{rel}", Body=want[rel])
    return want


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_objects_come_several_at_a_time_byte_for_byte(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _put(s3, "many", 24)
    fs, _ = filesystem("s3://sdk-bucket/many")  # the instance download_tree gets (cached)
    get_file = fs._get_file  # s3fs fetches on its event loop: count the fetches under way
    running, most = 0, 0

    async def watched(rpath: str, lpath: str, **kw: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)  # long enough for the others to start meanwhile
            return await get_file(rpath, lpath, **kw)
        finally:
            running -= 1

    monkeypatch.setattr(fs, "_get_file", watched)
    assert download_tree("s3://sdk-bucket/many", tmp_path / "out") == 24
    assert _tree(tmp_path / "out") == want
    assert most == transfer.DOWNLOAD_THREADS


def test_an_object_that_cannot_be_fetched_fails_the_copy_and_leaves_no_partial_file(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(s3, "failing", 12)
    retrying = transfer.retrying
    monkeypatch.setattr(transfer, "retrying", lambda what, op: retrying(what, op, ()))
    fs, _ = filesystem("s3://sdk-bucket/failing")
    get_file = fs._get_file

    async def flaky(rpath: str, lpath: str, **kw: Any) -> Any:
        if rpath.endswith("part-07.bin"):
            Path(lpath).write_bytes(b"half")  # cut off midway
            raise OSError("the connection was reset")
        return await get_file(rpath, lpath, **kw)

    monkeypatch.setattr(fs, "_get_file", flaky)
    with pytest.raises(StorageError, match="reset"):
        download_tree("s3://sdk-bucket/failing", tmp_path / "out")
    assert _tree(tmp_path / "out") == {}  # nothing whole was promised, so nothing is left


def test_a_local_folder_is_copied_whole_several_files_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    want = {}
    for i in range(40):
        rel = f"d{i % 3}/part-{i:02d}.bin"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        want[rel] = os.urandom(1000 + i)
        (src / rel).write_bytes(want[rel])
    lock = threading.Lock()
    running, most = 0, 0
    get_file = transfer.get_file

    def watched(fs: Any, rpath: str, dest: Path) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            threading.Event().wait(0.02)
            get_file(fs, rpath, dest)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(transfer, "get_file", watched)
    assert download_tree(src.as_uri(), tmp_path / "out") == 40
    assert _tree(tmp_path / "out") == want
    assert most == transfer.DOWNLOAD_THREADS
