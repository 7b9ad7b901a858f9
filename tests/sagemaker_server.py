"""A real ``spotrun server`` for the SageMaker API tests, and boto3 clients signed for it.

Its market: c5.xlarge and c5.2xlarge always have capacity, m5.xlarge never has spot
capacity (jobs there wait, so they are cheap to create by the hundred). The first spot job
on ml.c5.xlarge whose log shows training progress (by default the script's first step) is
reclaimed then, with a notice (see ``events.Reclaimer``): a reclaim at a fixed time after
launch would land before training or after it depending on how long the start-up took.
Nothing else is reclaimed unasked. Jobs name the image ``spotrun-test-image``, mapped in the
home's config to a small checkpointing script. The server keeps its state in the home's
SQLite file, or in the PostgreSQL database it is given (``server_database`` makes one for
a fixture parametrized over ``ENGINES``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from conftest import new_database
from events import Reclaimer
from spotrun.cli.client import Client, start_service, stop_service
from spotrun.dburl import shown_url
from spotrun.settings import Settings, load_settings, write_settings

SCRIPT = r"""
import os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR", "/opt/ml/checkpoints"))
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
steps = int(args.get("--steps", "20"))
forever = args.get("--forever") == "1"
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
state = ck / "step.txt"
step = int(state.read_text()) if state.exists() else 0
print(f"resumed from step {step}" if step else "starting fresh", flush=True)
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
while forever or step < steps:
    if stop:
        state.write_text(str(step))
        (model / "model.txt").write_text(f"stopped at {step}")
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75 if not forever else 0)
    time.sleep(0.1)
    step += 1
    state.write_text(str(step))
    print(f"step {step} loss={1.0 / step:.4f}", flush=True)
(model / "model.txt").write_text(f"steps={step}")
print("done", flush=True)
"""

MARKET = """
time_scale = 1
notice_lead_seconds = 1.5
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "always"
[[pools]]
instance_type = "c5.2xlarge"
process = "always"
[[pools]]
instance_type = "m5.xlarge"
process = "always"
capacity = 0
"""

#: what SCRIPT prints for each step it trains
SCRIPT_PROGRESS = re.compile(r"^step \d+ loss=")
#: the instance type whose first job with progress is reclaimed
RECLAIMED_TYPE = "ml.c5.xlarge"


def server_database(request: pytest.FixtureRequest) -> str | None:
    """The database for a server fixture parametrized over the engines (``request.param``):
    a fresh PostgreSQL one, dropped with the fixture, or None (SQLite in the home)."""
    return new_database(request, str(request.param))


class Server:
    """A spotrun server in its own home, and boto3 clients signed with its keys.

    ``reclaim`` is the progress line after which the first spot job on ml.c5.xlarge is
    interrupted (None: nothing is reclaimed unasked). ``database``: where it keeps its
    state (None: SQLite in the home). ``market``: the market file's text.
    """

    def __init__(
        self,
        root: Path,
        images: dict[str, dict[str, Any]] | None = None,
        reclaim: re.Pattern[str] | None = SCRIPT_PROGRESS,
        database: str | None = None,
        market: str = MARKET,
    ) -> None:
        self.root = root
        home = root / "home"
        code = root / "code"
        code.mkdir(parents=True)
        (code / "train.py").write_text(SCRIPT)
        (root / "market.toml").write_text(market)
        write_settings(
            home,
            market=str(root / "market.toml"),
            stop_grace_seconds=3.0,
            poll_seconds=0.25,
            database_url=database,
        )
        images = {
            "spotrun-test-image": {"source_dir": str(code), "entry_point": "train.py"},
            **(images or {}),
        }
        with open(home / "config.toml", "a") as f:
            for uri, entry in images.items():
                f.write(f"\n[images.{json.dumps(uri)}]\n")
                for k, v in entry.items():
                    f.write(f"{k} = {json.dumps(v)}\n")
        self.settings: Settings = load_settings(home)
        info = start_service(self.settings, quiet=True)
        # the server keeps its state where it was told to
        assert info["database"] == shown_url(self.settings.store_url), info
        self.url = f"http://{info['host']}:{info['port']}"
        cred = json.loads((home / "credentials.json").read_text())
        self.key = (cred["access_key_id"], cred["secret_access_key"])
        self.reclaimer = (
            None
            if reclaim is None
            else Reclaimer(self.rest(), self.client(), RECLAIMED_TYPE, reclaim)
        )

    def rest(self) -> Client:
        """spotrun's own API client (what the CLI uses), signed with this server's key."""
        return Client(self.url, *self.key)

    def stop(self) -> None:
        """Stop reclaiming and stop the server."""
        if self.reclaimer is not None:
            self.reclaimer.stop()
        stop_service(self.settings)

    def client(self, service: str = "sagemaker", key: tuple[str, str] | None = None) -> Any:
        access, secret = key or self.key
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    def cli(self, *args: str, key: tuple[str, str] | None = None, ok: bool = True) -> str:
        """Run the spotrun CLI against this server; ``ok=False`` expects it to fail."""
        env = {**os.environ, "SPOTRUN_HOME": str(self.settings.home)}
        env.pop("SPOTRUN_ENDPOINT", None)
        if key is not None:
            env["SPOTRUN_ACCESS_KEY_ID"], env["SPOTRUN_SECRET_ACCESS_KEY"] = key
        out = subprocess.run(
            [sys.executable, "-m", "spotrun.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (out.returncode == 0) == ok, out.stderr
        return out.stdout if ok else out.stderr

    def request(self, name: str, instance_type: str = "ml.c5.xlarge", **hps: str) -> dict[str, Any]:
        return {
            "TrainingJobName": name,
            "RoleArn": "arn:aws:iam::123456789012:role/SpotrunTest",
            "AlgorithmSpecification": {
                "TrainingImage": "spotrun-test-image",
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}],
            },
            "HyperParameters": hps,
            "OutputDataConfig": {"S3OutputPath": (self.root / "out").as_uri()},
            "ResourceConfig": {
                "InstanceType": instance_type,
                "InstanceCount": 1,
                "VolumeSizeInGB": 30,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 7200},
            "EnableManagedSpotTraining": True,
            "CheckpointConfig": {"S3Uri": (self.root / "ckpt" / name).as_uri()},
            "Tags": [{"Key": "team", "Value": "research"}],
        }
