"""Storage through fsspec: resolving, copying, packing and mirroring, on file:// and memory://."""

from __future__ import annotations

import errno
import os
import tarfile
import uuid
from pathlib import Path

import fsspec
import pytest

from spotrun.storage import (
    CheckpointMirror,
    StorageError,
    check_readable,
    download_tree,
    filesystem,
    retrying,
    tar_folder_to,
    upload_file,
    upload_tree,
)


@pytest.fixture
def mem() -> str:
    """A fresh memory:// bucket, removed afterwards (the memory filesystem is process-wide)."""
    bucket = f"memory://b-{uuid.uuid4().hex[:8]}"
    yield bucket
    fs, path = filesystem(bucket)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _no_temp_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if ".spotrun-tmp-" in p.name]
    assert leftovers == []


def test_filesystem_resolves_bare_paths_file_and_memory_uris(tmp_path: Path) -> None:
    fs, path = filesystem(str(tmp_path))
    assert path == str(tmp_path)
    fs2, path2 = filesystem(f"file://{tmp_path}/")
    assert type(fs2) is type(fs) and path2 == str(tmp_path)
    _, mpath = filesystem("memory://bucket/a/b/")
    assert mpath.endswith("bucket/a/b")


def test_unknown_scheme_is_a_storage_error_naming_the_uri() -> None:
    with pytest.raises(StorageError, match="nope://x/y"):
        filesystem("nope://x/y")


def test_check_readable_accepts_folders_and_objects_and_rejects_missing(
    tmp_path: Path, mem: str
) -> None:
    _tree(tmp_path / "data", {"a.csv": "1"})
    check_readable(f"file://{tmp_path}/data")
    check_readable(f"file://{tmp_path}/data/a.csv")
    check_readable(str(tmp_path / "data"))
    missing = f"file://{tmp_path}/does-not-exist"
    with pytest.raises(StorageError, match=r"does-not-exist does not exist"):
        check_readable(missing)
    fsspec.filesystem("memory").pipe(f"{mem}/train/x.bin", b"x")
    check_readable(f"{mem}/train")
    with pytest.raises(StorageError, match="does not exist"):
        check_readable(f"{mem}/validation")


def test_download_tree_copies_a_folder_keeping_relative_paths(tmp_path: Path, mem: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{mem}/ds/a.txt", b"A")
    fs.pipe(f"{mem}/ds/sub/b.txt", b"B")
    n = download_tree(f"{mem}/ds", tmp_path / "out")
    assert n == 2
    assert (tmp_path / "out/a.txt").read_text() == "A"
    assert (tmp_path / "out/sub/b.txt").read_text() == "B"
    _no_temp_files(tmp_path)


def test_download_tree_single_object_lands_under_its_basename(tmp_path: Path) -> None:
    _tree(tmp_path / "src", {"one.csv": "x,y"})
    assert download_tree(f"file://{tmp_path}/src/one.csv", tmp_path / "dst") == 1
    assert (tmp_path / "dst/one.csv").read_text() == "x,y"


def test_download_tree_of_nothing_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"ghost does not exist"):
        download_tree(f"file://{tmp_path}/ghost", tmp_path / "dst")


def test_upload_tree_and_file_to_local_and_memory(tmp_path: Path, mem: str) -> None:
    src = _tree(tmp_path / "src", {"a": "1", "d/b": "2"})
    assert upload_tree(src, f"file://{tmp_path}/remote") == 2
    assert (tmp_path / "remote/d/b").read_text() == "2"
    assert upload_tree(src, f"{mem}/up") == 2
    fs = fsspec.filesystem("memory")
    assert fs.cat(f"{mem}/up/d/b") == b"2"
    upload_file(src / "a", f"file://{tmp_path}/deep/er/x.bin")
    assert (tmp_path / "deep/er/x.bin").read_text() == "1"
    _no_temp_files(tmp_path)


def test_local_upload_is_atomic_a_failed_copy_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "remote/model.bin"
    dest.parent.mkdir()
    dest.write_text("old")
    src = tmp_path / "new.bin"
    src.write_text("new" * 1000)

    def half_copy(a: object, b: object) -> None:
        Path(str(b)).write_text("ne")  # a partial write, then the disk "fails"
        raise PermissionError("disk went away")

    monkeypatch.setattr("spotrun.storage._transfer.shutil.copyfile", half_copy)
    with pytest.raises(PermissionError):
        upload_file(src, f"file://{dest}")
    assert dest.read_text() == "old"
    _no_temp_files(tmp_path)


def test_tar_folder_to_puts_members_at_top_level(tmp_path: Path) -> None:
    model = _tree(tmp_path / "model", {"model.pt": "weights", "tok/vocab.txt": "a b"})
    uri = f"file://{tmp_path}/out/job/output/model.tar.gz"
    assert tar_folder_to(uri, model) == 2
    with tarfile.open(tmp_path / "out/job/output/model.tar.gz") as tar:
        names = sorted(tar.getnames())
        assert names == ["model.pt", "tok", "tok/vocab.txt"]
        member = tar.extractfile("model.pt")
        assert member is not None and member.read() == b"weights"


def test_tar_of_an_empty_folder_is_an_empty_tarball(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    assert tar_folder_to(f"file://{tmp_path}/m.tar.gz", tmp_path / "model") == 0
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        assert tar.getnames() == []


def test_retrying_retries_transient_errors_and_not_permanent_ones() -> None:
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionResetError(errno.ECONNRESET, "reset by peer")
        return "ok"

    assert retrying("flaky", flaky, backoff=(0.0, 0.0, 0.0)) == "ok"
    assert calls["n"] == 3

    def missing() -> None:
        calls["n"] += 1
        raise FileNotFoundError("gone")

    calls["n"] = 0
    with pytest.raises(FileNotFoundError):
        retrying("missing", missing, backoff=(0.0, 0.0))
    assert calls["n"] == 1

    def always() -> None:
        raise TimeoutError("slow")

    with pytest.raises(StorageError, match="always failed after 3 tries"):
        retrying("always", always, backoff=(0.0, 0.0))


# -- checkpoint mirror -------------------------------------------------------------------


def _bump(path: Path, text: str) -> None:
    """Rewrite a file so that its size or mtime_ns surely changes."""
    st = path.stat()
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_mirror_uploads_new_and_changed_files_and_mirrors_deletions(tmp_path: Path) -> None:
    local = _tree(tmp_path / "ckpt", {"a.pt": "1", "sub/b.pt": "2"})
    remote = tmp_path / "remote"
    mirror = CheckpointMirror(local, f"file://{remote}")

    first = mirror.sync()
    assert sorted(first.uploaded) == ["a.pt", "sub/b.pt"] and first.deleted == ()
    assert first.files == 2 and first.changed
    assert (remote / "sub/b.pt").read_text() == "2"

    again = mirror.sync()
    assert not again.changed and again.files == 2

    _bump(local / "a.pt", "11")
    (local / "c.pt").write_text("3")
    (local / "sub/b.pt").unlink()
    third = mirror.sync()
    assert sorted(third.uploaded) == ["a.pt", "c.pt"]
    assert third.deleted == ("sub/b.pt",)
    assert (remote / "a.pt").read_text() == "11"
    assert not (remote / "sub/b.pt").exists()
    assert mirror.files == 2
    _no_temp_files(tmp_path)


def test_mirror_uploads_in_write_order_so_a_manifest_goes_last(tmp_path: Path, mem: str) -> None:
    local = tmp_path / "ckpt"
    local.mkdir()
    base = 1_700_000_000_000_000_000
    for name in ["step-5/manifest.json", "step-5/weights.bin", "step-5/optim.bin"]:
        p = local / name
        p.parent.mkdir(exist_ok=True)
        p.write_text(name)
    # the manifest was written last, the weights first
    order = {"step-5/weights.bin": 0, "step-5/optim.bin": 1, "step-5/manifest.json": 2}
    for name, i in order.items():
        os.utime(local / name, ns=(base + i, base + i))
    result = CheckpointMirror(local, f"{mem}/ck").sync()
    assert result.uploaded == ("step-5/weights.bin", "step-5/optim.bin", "step-5/manifest.json")
    for name in order:
        (local / name).unlink()
    mirror = CheckpointMirror(local, f"{mem}/ck")
    mirror.restore()
    for name in order:
        (local / name).unlink()
    gone = mirror.sync()
    assert gone.deleted[0] == "step-5/manifest.json"  # a checkpoint stops being complete first


def test_mirror_uploads_a_manifest_last_even_when_mtimes_tie(tmp_path: Path) -> None:
    local = _tree(tmp_path / "ck", {"s/MANIFEST.json": "m", "s/a.bin": "a", "s/z.bin": "z"})
    for p in local.rglob("*.*"):
        os.utime(p, ns=(1, 1))  # written within one clock tick
    result = CheckpointMirror(local, f"file://{tmp_path}/remote").sync()
    assert result.uploaded == ("s/a.bin", "s/z.bin", "s/MANIFEST.json")


def test_mirror_restore_copies_remote_in_and_counts_it_as_synced(tmp_path: Path, mem: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{mem}/ck/state.json", b'{"step": 7}')
    fs.pipe(f"{mem}/ck/w/1.bin", b"w")
    local = tmp_path / "checkpoints"
    mirror = CheckpointMirror(local, f"{mem}/ck/")
    assert mirror.restore().files == 2
    assert (local / "state.json").read_text() == '{"step": 7}'
    assert not mirror.sync().changed  # nothing restored is uploaded back
    (local / "w/1.bin").unlink()
    assert mirror.sync().deleted == ("w/1.bin",)
    assert not fs.exists(f"{mem}/ck/w/1.bin")


def test_mirror_restore_from_a_fresh_uri_restores_nothing(tmp_path: Path) -> None:
    mirror = CheckpointMirror(tmp_path / "ck", f"file://{tmp_path}/never-written")
    assert mirror.restore().files == 0
    assert (tmp_path / "ck").is_dir()


def test_s3_endpoint_comes_from_the_environment() -> None:
    from spotrun.storage._fs import _storage_options

    env = {"AWS_ENDPOINT_URL": "http://generic:9000", "AWS_ENDPOINT_URL_S3": "http://s3:9000"}
    assert _storage_options("s3", env) == {"endpoint_url": "http://s3:9000"}
    assert _storage_options("s3", {"AWS_ENDPOINT_URL": "http://generic:9000"}) == {
        "endpoint_url": "http://generic:9000"
    }
    assert _storage_options("s3", {}) == {}
    assert _storage_options("file", env) == {}
