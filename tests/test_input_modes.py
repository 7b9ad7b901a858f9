"""SageMaker input modes in the agent: Pipe (FIFOs per epoch), Gzip channels, RecordIO.

The FIFO writer is tested on its own with real FIFOs and a reader in a child process or a
thread; the channel code with real files; and the whole through a real ``spotrun server``
(local provider, real agents): a Pipe-mode scikit-learn training interrupted as a spot job
and resumed, and a job whose channels mix every mode, compression and wrapper.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from events import interrupt_at, wait_until
from sagemaker_server import Server
from spotrun.agent.channels import ChannelDataError, cache_channel, link_channel, pipe_source
from spotrun.agent.layout import input_data_config
from spotrun.agent.pipes import (
    PipeError,
    PipeSource,
    PipeWriter,
    fifo_path,
    recordio_frame,
    recordio_header,
    start_pipes,
    stop_pipes,
)
from spotrun.spec import Channel, parse_spec
from spotrun.storage import StorageError

HERE = Path(__file__).resolve().parent
MAGIC = struct.pack("<I", 0xCED7230A)


# -- helpers ----------------------------------------------------------------------------


def objects(folder: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` under ``folder`` (the channel's "S3 prefix", as file://)."""
    for rel, body in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return folder


def source(folder: Path, **kw: Any) -> PipeSource:
    return pipe_source(Channel("train", folder.as_uri(), **kw))


def read_fifo(path: Path, timeout: float = 10.0) -> bytes:
    """The whole of one epoch, read by a child process (``cat``)."""
    out = subprocess.run(["cat", str(path)], capture_output=True, timeout=timeout, check=True)
    return out.stdout


def unframe(stream: bytes) -> list[bytes]:
    """Parse MXNet RecordIO (whole records only), checking every header and padding."""
    records, at = [], 0
    while at < len(stream):
        magic, word = struct.unpack_from("<II", stream, at)
        assert magic == 0xCED7230A, (at, hex(magic))
        assert word >> 29 == 0, "continuation flag set"
        length = word & ((1 << 29) - 1)
        records.append(stream[at + 8 : at + 8 + length])
        pad = -length % 4
        assert stream[at + 8 + length : at + 8 + length + pad] == b"\0" * pad
        at += 8 + length + pad
    return records


# -- the FIFO writer --------------------------------------------------------------------

FILES = {"b/part-1": b"second object\n", "a": b"first\n", "c": os.urandom(200_000)}
STREAM = b"".join(FILES[k] for k in sorted(FILES))  # key order: a, b/part-1, c


def test_each_epoch_streams_every_object_and_its_end_opens_the_next(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", FILES)
    fifos = tmp_path / "data"
    errors: list[str] = []
    writer = PipeWriter(fifos, "train", source(data).chunks, errors.append)
    writer.start()
    try:
        # made before start returns: a script that opens at once finds it
        assert stat.S_ISFIFO(fifo_path(fifos, "train", 0).stat().st_mode)
        assert read_fifo(fifo_path(fifos, "train", 0)) == STREAM
        # the next epoch's FIFO is there by the time the reader has seen end of file
        assert stat.S_ISFIFO(fifo_path(fifos, "train", 1).stat().st_mode)
        assert not fifo_path(fifos, "train", 0).exists()  # an epoch over is gone
        assert read_fifo(fifo_path(fifos, "train", 1)) == STREAM
        wait_until("two epochs done", lambda: writer.epochs_done == 2, 5)
        assert stat.S_ISFIFO(fifo_path(fifos, "train", 2).stat().st_mode)
    finally:
        started = time.monotonic()
        assert writer.stop(2.0)
    assert time.monotonic() - started < 1.0
    assert errors == []
    assert sorted(p.name for p in fifos.iterdir()) == []  # no FIFO and no plain file left


def test_stop_ends_a_writer_whose_reader_stopped_reading(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", {"big": os.urandom(4 << 20)})  # far beyond a pipe's room
    writer = PipeWriter(tmp_path / "data", "train", source(data).chunks, lambda m: None)
    writer.start()
    with open(fifo_path(tmp_path / "data", "train", 0), "rb") as reader:
        assert len(reader.read(1000)) == 1000
        time.sleep(0.2)  # the writer is now waiting for room in the pipe
        assert writer.alive
        started = time.monotonic()
        assert writer.stop(2.0)
        assert time.monotonic() - started < 1.0
        rest = reader.read()  # the write end is closed: end of file, not a hang
    assert len(rest) < 4 << 20


def test_a_reader_that_never_opens_holds_nothing_up(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", FILES)
    writers = start_pipes(
        tmp_path / "data",
        [source(data), pipe_source(Channel("other", data.as_uri()))],
        lambda m: None,
    )
    time.sleep(0.2)
    started = time.monotonic()
    assert stop_pipes(writers, 2.0) == []
    assert time.monotonic() - started < 1.0
    assert not any(w.alive for w in writers)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_reader_that_closes_early_ends_its_epoch(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", {"big": os.urandom(2 << 20)})
    fifos = tmp_path / "data"
    writer = PipeWriter(fifos, "train", source(data).chunks, lambda m: None)
    writer.start()
    try:
        with open(fifo_path(fifos, "train", 0), "rb") as f:
            f.read(10)
        wait_until("the next epoch", lambda: fifo_path(fifos, "train", 1).exists(), 5)
        assert read_fifo(fifo_path(fifos, "train", 1)) == (data / "big").read_bytes()
    finally:
        assert writer.stop()


def test_an_object_gone_before_it_streams_is_reported_before_end_of_file(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", {"a": b"x" * 100, "b": b"y" * 100})
    src = source(data)
    (data / "b").unlink()  # listed, then deleted: the stream cannot be whole
    heard: list[tuple[str, bool]] = []
    reader_done = threading.Event()

    def on_error(message: str) -> None:
        heard.append((message, reader_done.is_set()))

    writer = PipeWriter(tmp_path / "data", "train", src.chunks, on_error)
    writer.start()
    got = read_fifo(fifo_path(tmp_path / "data", "train", 0))
    reader_done.set()
    wait_until("the writer to end", lambda: not writer.alive, 5)
    assert got == b"x" * 100
    ((message, after_eof),) = heard
    assert not after_eof  # told while the script still waited on the FIFO
    assert "channel 'train', epoch 0" in message and str(data / "b") in message


# -- Gzip and RecordIO ------------------------------------------------------------------


def test_recordio_framing_byte_for_byte() -> None:
    assert recordio_frame(b"hello") == MAGIC + struct.pack("<I", 5) + b"hello\0\0\0"
    assert recordio_frame(b"") == MAGIC + b"\0\0\0\0"
    assert recordio_frame(b"abcd") == MAGIC + struct.pack("<I", 4) + b"abcd"
    with pytest.raises(PipeError, match="at most 536870911 bytes"):
        recordio_header(1 << 29)


def test_pipe_recordio_wraps_each_object_and_gzip_is_undone_first(tmp_path: Path) -> None:
    bodies = {"0": b"", "1": b"a", "2": b"abcde", "3": b"abcdefgh", "4": os.urandom(3 << 20)}
    data = objects(tmp_path / "s3", bodies)
    chunks = source(data, record_wrapper_type="RecordIO").chunks()
    framed = b"".join(chunks)
    assert unframe(framed) == [bodies[k] for k in sorted(bodies)]
    assert framed[:16] == MAGIC + b"\0\0\0\0" + MAGIC + b"\1\0\0\0"  # "" then "a" + padding

    zipped = objects(tmp_path / "gz", {k: gzip.compress(v) for k, v in bodies.items()})
    src = source(zipped, record_wrapper_type="RecordIO", compression_type="Gzip")
    assert b"".join(src.chunks()) == framed


def test_pipe_gzip_streams_decompressed_members_and_all(tmp_path: Path) -> None:
    two_members = gzip.compress(b"one ") + gzip.compress(b"two\n")
    data = objects(tmp_path / "s3", {"a.gz": two_members, "b.gz": gzip.compress(b"three\n")})
    assert b"".join(source(data, compression_type="Gzip").chunks()) == b"one two\nthree\n"
    (data / "c.gz").write_bytes(b"not gzip at all")
    with pytest.raises(PipeError, match=r"cannot stream .*c\.gz"):
        b"".join(source(data, compression_type="Gzip").chunks())


def test_file_mode_gzip_is_decompressed_once_and_names_lose_gz(tmp_path: Path) -> None:
    data = objects(
        tmp_path / "s3",
        {
            "part-0.csv.gz": gzip.compress(b"1,2\n"),
            "nested/data.tar.gz": gzip.compress(b"tar bytes"),
            "no-suffix": gzip.compress(b"plain name"),
        },
    )
    channel = Channel("train", data.as_uri(), compression_type="Gzip")
    cached = cache_channel(channel, tmp_path / "cache", "job")
    dest = tmp_path / "ml/input/data/train"
    assert link_channel(cached, dest) == 3
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert found == {
        "part-0.csv": b"1,2\n",
        "nested/data.tar": b"tar bytes",
        "no-suffix": b"plain name",
    }
    # a later attempt links the decompressed copy; a plain fetch of the same URI does not
    assert not cache_channel(channel, tmp_path / "cache", "job").fetched
    plain = cache_channel(Channel("train", data.as_uri()), tmp_path / "cache", "job")
    assert plain.fetched and (plain.folder / "part-0.csv.gz").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.csv": gzip.compress(b"1"), "a.csv.gz": gzip.compress(b"2")}, "would both"),
        ({"bad.gz": b"plain text"}, "'bad.gz' is not gzip data"),
    ],
)
def test_file_mode_gzip_refuses_what_it_cannot_decompress(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    data = objects(tmp_path / "s3", files)
    channel = Channel("train", data.as_uri(), compression_type="Gzip")
    with pytest.raises(ChannelDataError, match=message):
        cache_channel(channel, tmp_path / "cache", "job")
    assert not (tmp_path / "cache/job/train/.spotrun-complete").exists()


def test_inputdataconfig_carries_record_wrapper_and_effective_mode() -> None:
    ch = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}}
    spec = parse_spec(
        {
            "TrainingJobName": "modes",
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "Pipe"},
            "RoleArn": "arn:aws:iam::123456789012:role/R",
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "InputDataConfig": [
                {**ch, "ChannelName": "rec", "RecordWrapperType": "RecordIO"},
                {**ch, "ChannelName": "file", "InputMode": "File"},
            ],
        }
    )
    assert input_data_config(spec) == {
        "rec": {
            "TrainingInputMode": "Pipe",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "RecordIO",
        },
        "file": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
    }


# -- through a real server and agents -------------------------------------------------

PROBE = r"""
import json, os, stat, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
data = os.path.dirname(os.environ["SM_CHANNEL_FILEGZ"])
def listing(folder):
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read().hex()
            for d, _, names in os.walk(folder) for n in names}
def is_fifo(name):
    return stat.S_ISFIFO(os.stat(os.path.join(data, name)).st_mode)
config = os.path.join(os.environ["SM_INPUT_CONFIG_DIR"], "inputdataconfig.json")
probe = {
    "env": {k: v for k, v in os.environ.items() if k.startswith("SM_CHANNEL")},
    "config": json.load(open(config)),
    "filegz": listing(os.environ["SM_CHANNEL_FILEGZ"]),
    "fast": listing(os.environ["SM_CHANNEL_FAST"]),
    "pipe_folder": listing(os.environ["SM_CHANNEL_PIPEGZ"]),
}
for name in ("pipegz", "rec", "recgz"):
    with open(os.environ["SM_CHANNEL_" + name.upper()] + "_0", "rb") as f:
        probe[name] = f.read().hex()
probe["entries"] = sorted(os.listdir(data))  # after end of file: the next epochs' FIFOs
probe["fifos"] = sorted(n for n in os.listdir(data) if is_fifo(n))
with open(args["--out"], "w") as f:
    json.dump(probe, f)
print("probed", flush=True)
"""


def wait_done(sm: Any, name: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        assert time.monotonic() < deadline, (d["TrainingJobStatus"], d["SecondaryStatus"])
        time.sleep(0.25)


def all_lines(server: Server, name: str) -> list[str]:
    client, after, lines = server.rest(), 0, []
    while True:
        page = client.logs(name, after=after)
        lines += [entry["line"] for entry in page["lines"]]
        if not page["lines"]:
            return lines
        after = page["next"]


def s3_channel(name: str, folder: Path, **extra: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": folder.as_uri(),
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    root = tmp_path_factory.mktemp("input-modes")
    images = {}
    for image, text in (("pipe-train", (HERE / "pipe_script.py").read_text()), ("probe", PROBE)):
        code = root / image
        code.mkdir()
        (code / "train.py").write_text(text)
        images[image] = {"source_dir": str(code), "entry_point": "train.py"}
    s = Server(root / "srv", images=images, reclaim=None)
    yield s
    s.stop()


def digits_channel(folder: Path) -> bytes:
    """The digits data set as three CSV objects (pixels, then the label); their bytes in
    key order, which is what each epoch must stream."""
    x, y = load_digits(return_X_y=True)
    rows = np.column_stack([x, y]).astype(int)
    parts = np.array_split(rows, 3)
    files = {}
    for i, part in enumerate(parts):
        lines = "".join(",".join(map(str, r)) + "\n" for r in part)
        files[f"part-{i}.csv"] = lines.encode()
    objects(folder, files)
    return b"".join(files[k] for k in sorted(files))


EPOCH_LINE = re.compile(r"^epoch (\d+) read (train_\d+) (\d+) bytes sha256 ([0-9a-f]+)$")
MORE = 3


def test_pipe_mode_training_survives_a_spot_interruption(server: Server, tmp_path: Path) -> None:
    stream = digits_channel(tmp_path / "digits")
    sha = hashlib.sha256(stream).hexdigest()
    name = "pipe-spot"
    req = server.request(name, instance_type="ml.c5.2xlarge")  # reclaimed only when we ask
    req["AlgorithmSpecification"]["TrainingImage"] = "pipe-train"
    req["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    req["HyperParameters"] = {"more": str(MORE)}
    req["InputDataConfig"] = [s3_channel("train", tmp_path / "digits")]
    server.client().create_training_job(**req)
    try:
        interrupt_at(server.rest(), name, re.compile(r"^epoch 1 read train_1 "), lead=2.0)
        d = wait_done(server.client(), name)
    finally:
        if server.client().describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in (
            "InProgress",
        ):
            server.cli("stop", name)
    lines = all_lines(server, name)
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), lines[-20:])
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 1 and statuses[-1] == "Completed", statuses

    # two attempts, each reading its own FIFOs from _0 on, each epoch the whole channel
    assert lines.count("starting fresh") == 1, lines
    saved = [int(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("checkpointed at epoch ")]
    assert len(saved) == 1 and saved[0] >= 2, lines
    assert f"resumed at epoch {saved[0]}" in lines, lines
    reads = [m.groups() for x in lines if (m := EPOCH_LINE.match(x))]
    assert [int(e) for e, *_ in reads] == list(range(saved[0] + MORE)), reads
    fifos = [f for _, f, _, _ in reads]
    assert fifos == [f"train_{i}" for i in range(saved[0])] + [f"train_{i}" for i in range(MORE)]
    assert {(int(n), h) for _, _, n, h in reads} == {(len(stream), sha)}
    # no file of the Pipe channel was staged, on either attempt
    assert lines.count("channel folder holds []") == 2, lines
    accuracy = next(float(x.rsplit("=", 1)[1]) for x in lines if x.startswith("trained "))
    assert accuracy > 0.85, lines[-5:]


def test_a_job_mixing_modes_compression_and_record_wrappers(server: Server, tmp_path: Path) -> None:
    gz = gzip.compress
    filegz = objects(
        tmp_path / "filegz", {"rows.csv.gz": gz(b"1,2\n"), "sub/notes.txt.gz": gz(b"hello")}
    )
    fast = objects(tmp_path / "fast", {"x.bin": b"\x00\x01fast"})
    pipegz = objects(tmp_path / "pipegz", {"a.gz": gz(b"alpha "), "b.gz": gz(b"beta")})
    records = {"r0": b"", "r1": b"abc", "r2": b"abcdefgh", "r3": b"\xce\xd7\x23\x0a!"}
    rec = objects(tmp_path / "rec", records)
    recgz = objects(tmp_path / "recgz", {k: gz(v) for k, v in records.items()})
    unused = objects(tmp_path / "unused", {"big": os.urandom(1 << 20)})
    out = tmp_path / "probe.json"

    name = "modes-mix"
    req = server.request(name, instance_type="ml.c5.2xlarge")
    req["AlgorithmSpecification"]["TrainingImage"] = "probe"
    req["HyperParameters"] = {"out": str(out)}
    req.pop("CheckpointConfig")
    req["InputDataConfig"] = [
        s3_channel("filegz", filegz, CompressionType="Gzip"),
        s3_channel("fast", fast, InputMode="FastFile", RecordWrapperType="RecordIO"),
        s3_channel("pipegz", pipegz, InputMode="Pipe", CompressionType="Gzip"),
        s3_channel("rec", rec, InputMode="Pipe", RecordWrapperType="RecordIO"),
        s3_channel(
            "recgz", recgz, InputMode="Pipe", RecordWrapperType="RecordIO", CompressionType="Gzip"
        ),
        s3_channel("unused", unused, InputMode="Pipe"),  # the script never opens it
    ]
    started = time.monotonic()
    server.client().create_training_job(**req)
    d = wait_done(server.client(), name, timeout=120)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert time.monotonic() - started < 60  # an unopened FIFO held nothing up
    probe = json.loads(out.read_text())

    # File (Gzip) and FastFile: plain files; Gzip decompressed, ".gz" dropped
    assert probe["filegz"] == {"rows.csv": b"1,2\n".hex(), "sub/notes.txt": b"hello".hex()}
    assert probe["fast"] == {"x.bin": b"\x00\x01fast".hex()}
    # Pipe: FIFOs beside empty channel folders; SM_CHANNEL_* still the folders
    assert probe["pipe_folder"] == {}
    assert probe["fifos"] == ["pipegz_1", "rec_1", "recgz_1", "unused_0"]
    assert set(probe["entries"]) == {
        "fast", "filegz", "pipegz", "rec", "recgz", "unused", *probe["fifos"]
    }  # fmt: skip
    env = probe["env"]
    assert env["SM_CHANNEL_REC"] == env["SM_CHANNEL_FILEGZ"].rsplit("/", 1)[0] + "/rec"
    assert bytes.fromhex(probe["pipegz"]) == b"alpha beta"
    framed = b"".join(recordio_frame(records[k]) for k in sorted(records))
    assert bytes.fromhex(probe["rec"]) == framed
    assert bytes.fromhex(probe["recgz"]) == framed
    assert unframe(framed) == [records[k] for k in sorted(records)]
    # inputdataconfig.json: each channel's effective mode and its wrapper, as sent
    config = probe["config"]
    assert config["fast"]["TrainingInputMode"] == "FastFile"
    assert config["fast"]["RecordWrapperType"] == "RecordIO"
    assert config["rec"] == {
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "RecordIO",
    }
    assert config["filegz"]["TrainingInputMode"] == "File"
    assert config["filegz"]["RecordWrapperType"] == "None"


def test_sharded_pipe_channel_streams_only_this_hosts_objects(tmp_path: Path) -> None:
    data = objects(tmp_path / "s3", {f"k{i}": f"<{i}>".encode() for i in range(5)})
    ch = Channel("train", data.as_uri(), data_distribution="ShardedByS3Key")
    first, second = pipe_source(ch, (0, 2)), pipe_source(ch, (1, 2))
    assert b"".join(first.chunks()) == b"<0><2><4>"
    assert b"".join(second.chunks()) == b"<1><3>"
    shutil.rmtree(data)
    with pytest.raises(StorageError, match="does not exist"):
        pipe_source(ch)


def test_pipe_streams_an_s3_prefix_with_gzip(tmp_path: Path, s3: dict[str, str]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL_S3"])
    bodies = {"data/b.gz": gzip.compress(b"B" * 300_000), "data/a.gz": gzip.compress(b"A\n")}
    for key, body in bodies.items():
        client.put_object(Bucket="sdk-bucket", Key=key, Body=body)
    ch = Channel("train", "s3://sdk-bucket/data", compression_type="Gzip")
    writer = PipeWriter(tmp_path / "data", "train", pipe_source(ch).chunks, lambda m: None)
    writer.start()
    try:
        for epoch in range(2):
            got = read_fifo(fifo_path(tmp_path / "data", "train", epoch))
            assert got == b"A\n" + b"B" * 300_000
    finally:
        assert writer.stop()


def test_a_pipe_channel_that_cannot_be_streamed_fails_the_job_with_its_reason(
    server: Server, tmp_path: Path
) -> None:
    good = objects(tmp_path / "good", {"a": b"fine"})
    bad = objects(tmp_path / "bad", {"a.gz": gzip.compress(b"ok "), "b.gz": b"not gzip"})
    name = "pipe-bad-gzip"
    req = server.request(name, instance_type="ml.c5.2xlarge")
    req["AlgorithmSpecification"]["TrainingImage"] = "probe"
    req["HyperParameters"] = {"out": str(tmp_path / "probe.json")}
    req.pop("CheckpointConfig")
    req["InputDataConfig"] = [
        s3_channel(ch, good, InputMode="File") for ch in ("filegz", "fast", "rec", "recgz")
    ] + [s3_channel("pipegz", bad, InputMode="Pipe", CompressionType="Gzip")]
    server.client().create_training_job(**req)
    d = wait_done(server.client(), name, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    reason = d["FailureReason"]
    assert reason.startswith("ClientError: Pipe channel 'pipegz', epoch 0: cannot stream "), reason
    assert "b.gz" in reason, reason
    assert not (tmp_path / "probe.json").exists()  # killed before it took the cut-off stream


def test_a_pipe_fifo_name_taken_by_another_channel_is_refused() -> None:
    from spotrun.agent.main import _check_pipe_names
    from spotrun.agent.outcome import JobInputError

    ch = {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/p"}}}
    spec = parse_spec(
        {
            "TrainingJobName": "clash",
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::123456789012:role/R",
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "InputDataConfig": [
                {**ch, "ChannelName": "train", "InputMode": "Pipe"},
                {**ch, "ChannelName": "train_1"},
            ],
        }
    )
    with pytest.raises(JobInputError, match="channel 'train_1' has the name of a FIFO"):
        _check_pipe_names(spec)
