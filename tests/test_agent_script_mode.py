"""SageMaker SDK script mode and mapped images, run by a real agent process.

Each test admits a job the way the service does (``admit_plan`` with the home's image
registry), stores it with its run plan, opens an attempt and runs ``python -m
spotrun.agent`` to the end against the instance API over that store (``agent_api``).
The source tarball comes from a ``file://`` URI or from a moto S3 server on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_api import AgentServer
from spotrun.agent.outcome import JobInputError
from spotrun.agent.program import toolkit_args
from spotrun.agent.source import safe_extract
from spotrun.control.admission import admit_plan
from spotrun.errors import SpecError
from spotrun.images import plan_to_json
from spotrun.settings import add_image, load_images, load_settings, remove_image
from spotrun.storage import check_readable
from spotrun.store import HostRecord, Store

SRC = Path(__file__).resolve().parents[1] / "src"
ARN = "arn:aws:sagemaker:us-east-1:000000000000:training-job/{}"
PYTORCH = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"

#: what the SDK would send for hyperparameters={"epochs": 3, "lr": 0.01, ...}
USER_HPS = {
    "epochs": "3",
    "lr": "0.01",
    "optimizer": '"adam"',
    "shuffle": "true",
    "layers": "[64, 32]",
    "b": '"x y"',
}
#: the arguments the SageMaker training toolkit builds from them
USER_ARGS = [
    "-b", "x y", "--epochs", "3", "--layers", "[64, 32]", "--lr", "0.01",
    "--optimizer", "adam", "--shuffle", "True",
]  # fmt: skip

PROBE = """
    import json, os, sys
    import helper  # a module of the source tarball, next to the program
    config = os.environ["SM_INPUT_CONFIG_DIR"]
    probe = {
        "argv": sys.argv[1:],
        "env": {k: v for k, v in os.environ.items() if k.startswith("SM_")},
        "cwd": os.getcwd(),
        "helper": helper.VALUE,
        "nested": open(os.path.join("pkg", "data.txt")).read(),
        "hps_file": json.load(open(os.path.join(config, "hyperparameters.json"))),
    }
    json.dump(probe, open(os.path.join(os.environ["SM_MODEL_DIR"], "probe.json"), "w"))
    print("epoch 1 loss=0.5", flush=True)
    print("val_acc: 0.75", file=sys.stderr, flush=True)
    print("epoch 2 loss=0.25", flush=True)
"""


def sourcedir_tar(folder: Path, files: dict[str, str]) -> Path:
    """A ``sourcedir.tar.gz`` shaped like the SDK's: files at the archive's top level."""
    tarball = folder / "sourcedir.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, text in files.items():
            data = textwrap.dedent(text).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return tarball


PROBE_FILES = {
    "train.py": PROBE,
    "helper.py": "VALUE = 'from helper'\n",
    "pkg/data.txt": "nested file",
}


def sdk_hps(submit: str, program: str = "train.py", **user: str) -> dict[str, str]:
    """Hyperparameters as the SageMaker SDK sends them (values JSON-encoded)."""
    return {
        **user,
        "sagemaker_program": json.dumps(program),
        "sagemaker_submit_directory": json.dumps(submit),
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": json.dumps("sdk-job"),
        "sagemaker_region": json.dumps("us-east-1"),
    }


@dataclass
class Instances:
    """A spotrun home with a store, and agents run against it as real processes."""

    tmp: Path
    home: Path
    api: AgentServer

    @property
    def store(self) -> Store:
        return self.api.store

    def submit(
        self,
        name: str,
        image: str,
        hyperparameters: dict[str, str],
        metrics: list[dict[str, str]] | None = None,
        store_plan: bool = True,
    ) -> None:
        """Admit (as the service does, with the home's registry) and store a job with its
        run plan (or, ``store_plan=False``, as jobs were stored before plans were)."""
        req: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "TrainingImage": image,
                "MetricDefinitions": metrics or [],
            },
            "HyperParameters": hyperparameters,
            "OutputDataConfig": {"S3OutputPath": (self.tmp / "out").as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
            "EnableManagedSpotTraining": True,
        }
        spec, plan = admit_plan(
            req,
            known_type=lambda t: True,
            known_types=lambda: ["m5.large"],
            check_readable=check_readable,
            images=load_settings(self.home).images,
        )
        stored = plan_to_json(plan) if store_plan else None
        self.store.create_job(name, ARN.format(name), spec.to_api(), time.time(), run_plan=stored)

    def ml_root(self, name: str) -> Path:
        return self.tmp / f"instances/{name}/ml"

    def run(
        self, name: str, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> tuple[int, HostRecord]:
        """One attempt of ``name`` on algo-1, to the end: (agent exit code, host record)."""
        for att in self.store.attempts(name):
            if att.live:  # the previous attempt is over: the next one resumes the job
                self.store.update_attempt(name, att.generation, state="ended", ended_at=time.time())
                self.api.keys.revoke(name, att.generation)
        gen = self.api.attempt(name)
        full = {
            **os.environ,
            **(env or {}),
            **self.api.env(name, gen),
            "PYTHONPATH": str(SRC),
            "SPOTRUN_CACHE": str(self.home / "cache"),
            "SPOTRUN_ML_ROOT": str(self.ml_root(name)),
            "SPOTRUN_ISOLATION": "folder",
            "SPOTRUN_POLL_SECONDS": "0.2",
        }
        full.pop("SPOTRUN_METADATA_URL", None)
        with (self.tmp / f"agent-{name}.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "spotrun.agent"], env=full, stdout=out, stderr=out
            )
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"agent still running after {timeout} s") from None
            finally:
                if proc.poll() is None:  # timed out, or the test was interrupted
                    proc.kill()
                    proc.wait()
        (rec,) = self.store.hosts(name, gen)
        return code, rec

    def lines(self, name: str, stream: str | None = None) -> list[str]:
        logs = self.store.logs(name, limit=100_000)
        return [r.line for r in logs if stream is None or r.stream == stream]

    def probe(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.ml_root(name) / "model/probe.json").read_text())
        return doc


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instances]:
    home = tmp_path / "home"
    api = AgentServer(home, images=lambda: load_images(home))
    yield Instances(tmp_path, home, api)
    api.close()


def _check_probe(inst: Instances, name: str, submit: str) -> None:
    code = inst.ml_root(name) / "code"
    probe = inst.probe(name)
    env = probe["env"]
    assert probe["argv"] == USER_ARGS
    assert json.loads(env["SM_USER_ARGS"]) == USER_ARGS
    assert probe["cwd"] == str(code)
    assert probe["helper"] == "from helper" and probe["nested"] == "nested file"
    assert env["SM_MODULE_DIR"] == submit
    assert env["SM_MODULE_NAME"] == "train" and env["SM_USER_ENTRY_POINT"] == "train.py"
    hps = json.loads(env["SM_HPS"])
    assert hps["epochs"] == 3 and hps["lr"] == 0.01 and hps["layers"] == [64, 32]
    assert hps["optimizer"] == "adam" and hps["shuffle"] is True
    # the SDK's own keys are not arguments, but the script can still see them
    assert hps["sagemaker_program"] == "train.py" and hps["sagemaker_submit_directory"] == submit
    assert env["SM_HP_EPOCHS"] == "3" and env["SM_HP_OPTIMIZER"] == "adam"
    assert env["SM_HP_LAYERS"] == "[64, 32]" and env["SM_HP_SHUFFLE"] == "true"
    assert env["SM_LOG_LEVEL"] == "20"
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["module_dir"] == submit and training_env["hyperparameters"] == hps
    # hyperparameters.json is what the platform writes: every value a string, as sent
    assert probe["hps_file"] == sdk_hps(submit, **USER_HPS)
    assert not any(p.name.endswith(".tar.gz") for p in code.iterdir())


def test_sdk_script_mode_from_a_file_uri(inst: Instances) -> None:
    tarball = sourcedir_tar(inst.tmp, PROBE_FILES)
    submit = tarball.as_uri()
    inst.submit(
        "sdk-file",
        PYTORCH,  # a default mapping: no config entry needed
        sdk_hps(submit, **USER_HPS),
        metrics=[
            {"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
            {"Name": "val:acc", "Regex": r"val_acc: ([0-9.]+)"},
        ],
    )
    code, rec = inst.run("sdk-file")
    assert code == 0
    assert rec.failure_reason is None, rec.failure_reason
    assert (rec.exit_code, rec.finished, rec.model_uploaded) == (0, True, True)
    _check_probe(inst, "sdk-file", submit)
    # the stored request still names the image the user gave
    job = inst.store.get_job("sdk-file")
    assert job.request["AlgorithmSpecification"]["TrainingImage"] == PYTORCH
    assert "SourceDir" not in job.request["AlgorithmSpecification"]
    points = [(n, v) for n, v, _t in inst.store.metrics("sdk-file")]
    # stdout and stderr are two pipes: lines keep their order within a stream only
    assert [p for p in points if p[0] == "train:loss"] == [
        ("train:loss", 0.5),
        ("train:loss", 0.25),
    ]
    assert [p for p in points if p[0] != "train:loss"] == [("val:acc", 0.75)]


def test_sdk_script_mode_from_s3_with_a_configured_image(
    inst: Instances, s3: dict[str, str]
) -> None:
    import boto3

    tarball = sourcedir_tar(inst.tmp, PROBE_FILES)
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL_S3"])
    client.upload_file(str(tarball), "sdk-bucket", "sdk-s3/source/sourcedir.tar.gz")
    submit = "s3://sdk-bucket/sdk-s3/source/sourcedir.tar.gz"
    image = "registry.example.com/team/custom-framework:1"
    add_image(inst.home, "*/custom-framework:*", script_mode=True)

    # admission reads the submit directory from S3 as well, and refuses a missing one
    with pytest.raises(SpecError) as e:
        inst.submit("sdk-missing", image, sdk_hps("s3://sdk-bucket/nope/sourcedir.tar.gz"))
    assert e.value.field == "HyperParameters.sagemaker_submit_directory"

    inst.submit("sdk-s3", image, sdk_hps(submit, **USER_HPS))
    code, rec = inst.run("sdk-s3", env=s3)
    assert code == 0
    assert rec.failure_reason is None, rec.failure_reason
    assert rec.finished and rec.model_uploaded
    _check_probe(inst, "sdk-s3", submit)

    # gone from S3 by the next attempt: a failure reason, not a crash
    client.delete_object(Bucket="sdk-bucket", Key="sdk-s3/source/sourcedir.tar.gz")
    code, rec = inst.run("sdk-s3", env=s3)
    assert code == 0 and rec.phase == "done" and rec.exit_code is None
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith(
        f"ClientError: cannot fetch sagemaker_submit_directory '{submit}'"
    )


def test_a_missing_or_unsafe_tarball_is_a_failure_reason(inst: Instances) -> None:
    folder = inst.tmp / "src"
    folder.mkdir()
    tarball = sourcedir_tar(folder, {"train.py": "print('ran')\n"})
    inst.submit("gone", PYTORCH, sdk_hps(tarball.as_uri()))
    tarball.unlink()
    code, rec = inst.run("gone")
    assert code == 0 and rec.phase == "done" and rec.exit_code is None
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith("ClientError: cannot fetch sagemaker_submit_directory")
    assert "does not exist" in rec.failure_reason

    evil = sourcedir_tar(folder, {"train.py": "print('ran')\n", "../escaped.py": "x = 1\n"})
    inst.submit("evil", PYTORCH, sdk_hps(evil.as_uri()))
    code, rec = inst.run("evil")
    assert code == 0 and rec.exit_code is None
    assert rec.failure_reason is not None
    assert "'../escaped.py' would land outside the code folder" in rec.failure_reason
    assert not (inst.ml_root("evil") / "escaped.py").exists()
    assert "ran" not in inst.lines("evil")

    not_there = sourcedir_tar(folder, {"other.py": "print('ran')\n"})
    inst.submit("noprog", PYTORCH, sdk_hps(not_there.as_uri()))
    code, rec = inst.run("noprog")
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith("ClientError: sagemaker_program 'train.py' is not in")


def test_an_image_mapped_to_a_baked_script(inst: Instances) -> None:
    baked = inst.tmp / "baked"
    baked.mkdir()
    (baked / "run.py").write_text(
        textwrap.dedent(
            """
            import json, os, sys
            json.dump({"argv": sys.argv[1:], "module_dir": os.environ["SM_MODULE_DIR"]},
                      open(os.path.join(os.environ["SM_MODEL_DIR"], "probe.json"), "w"))
            """
        )
    )
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-trainer:latest"
    add_image(inst.home, image, source_dir=str(baked), entry_point="run.py")
    inst.submit("baked", image, {"epochs": "3", "sagemaker_region": '"us-east-1"'})
    code, rec = inst.run("baked")
    assert code == 0 and rec.finished, rec.failure_reason
    probe = inst.probe("baked")
    assert probe["argv"] == ["--epochs", "3"]  # toolkit style: no sagemaker_* arguments
    assert probe["module_dir"] == str(inst.ml_root("baked") / "code")

    # what runs was decided at admission: a mapping removed afterwards changes nothing for
    # the admitted job, whose next attempt runs the same script
    remove_image(inst.home, image)
    code, rec = inst.run("baked")
    assert code == 0 and rec.finished, rec.failure_reason
    assert inst.probe("baked")["argv"] == ["--epochs", "3"]

    # a job stored before plans were (none with it) is planned by the server from its
    # registry: with the mapping gone, the attempt fails as admission would have refused it
    add_image(inst.home, image, source_dir=str(baked), entry_point="run.py")
    inst.submit("unplanned", image, {"epochs": "3"}, store_plan=False)
    remove_image(inst.home, image)
    code, rec = inst.run("unplanned")
    assert code == 0 and rec.exit_code is None and rec.ending == "failed"
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith(
        f"ClientError: AlgorithmSpecification.TrainingImage: {image!r} is not mapped"
    )
    assert str(inst.home / "config.toml") in rec.failure_reason


# -- the pieces ---------------------------------------------------------------------------


def test_toolkit_arguments() -> None:
    assert toolkit_args(USER_HPS | {"sagemaker_program": '"t.py"'}) == USER_ARGS
    assert toolkit_args(
        {
            "_tuning_objective_metric": '"loss"',
            "opts": '{"b": 2, "a": "x"}',
            "none": "null",
            "raw": "not json",
        }
    ) == ["--none", "", "--opts", "a=x,b=2", "--raw", "not json"]


def _tar_with(tmp_path: Path, member: tarfile.TarInfo) -> Path:
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("fine.txt")
        tar.addfile(ok, io.BytesIO(b""))
        tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    ("kind", "name", "link", "problem"),
    [
        (tarfile.REGTYPE, "/etc/evil", "", "would land outside"),
        (tarfile.REGTYPE, "a/../../evil", "", "would land outside"),
        (tarfile.SYMTYPE, "link", "/etc/passwd", "is a link to '/etc/passwd'"),
        (tarfile.SYMTYPE, "sub/link", "../../x", "is a link to '../../x'"),
        (tarfile.LNKTYPE, "hard", "../x", "is a hard link"),
        (tarfile.CHRTYPE, "dev", "", "is a device file"),
    ],
)
def test_unpacking_refuses_members_that_escape(
    tmp_path: Path, kind: bytes, name: str, link: str, problem: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = link
    dest = tmp_path / "code"
    dest.mkdir()
    with pytest.raises(JobInputError) as e:
        safe_extract(_tar_with(tmp_path, member), dest, "the source")
    assert problem in str(e.value) and str(e.value).startswith("ClientError: refusing")
    assert list(dest.iterdir()) == []  # checked before anything is written


def test_unpacking_keeps_links_that_stay_inside(tmp_path: Path) -> None:
    member = tarfile.TarInfo("sub/link")
    member.type = tarfile.SYMTYPE
    member.linkname = "../fine.txt"
    dest = tmp_path / "code"
    dest.mkdir()
    assert safe_extract(_tar_with(tmp_path, member), dest, "the source") == 1
    assert (dest / "sub/link").resolve() == (dest / "fine.txt").resolve()
    with pytest.raises(JobInputError, match="not a usable tar archive"):
        (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
        safe_extract(tmp_path / "junk.tar.gz", dest, "the source")
