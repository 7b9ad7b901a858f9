"""The ``/opt/ml`` tree a training container expects, and the config files in it.

The files follow the SageMaker container contract, so stock framework images and the
sagemaker-training toolkit read them unchanged. When the instance has no private mount
namespace, ``ml_root`` stands in for ``/opt/ml`` and every container path under
``/opt/ml`` (a checkpoint ``LocalPath``, say) is mapped into it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from spotrun.spec import JobSpec

CONTAINER_ROOT = PurePosixPath("/opt/ml")
GROUP_NAME = "homogeneousCluster"
#: the hosts of local instances without a network of their own talk over loopback
NETWORK_INTERFACE = "lo"
#: an instance with a network namespace of its own reaches the others by its veth
NETNS_INTERFACE = "eth0"
#: a process that wants a clean exit after a notice to count as success writes this file
FINISHED_FILE_NAME = ".spotrun-finished"


@dataclass(frozen=True)
class MlLayout:
    """Paths inside the folder that plays ``/opt/ml`` for one host."""

    root: Path
    isolation: str  # "namespace" or "folder"

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "input" / "data"

    def channel_dir(self, channel: str) -> Path:
        return self.data_dir / channel

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def code_dir(self) -> Path:
        return self.root / "code"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.root / "output" / "data"

    def host_output_data_dir(self, host: str) -> Path:
        """``SM_OUTPUT_DATA_DIR``: the toolkit gives each host its own folder under it."""
        return self.output_data_dir / host

    @property
    def intermediate_dir(self) -> Path:
        return self.root / "output" / "intermediate"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def finished_file(self) -> Path:
        return self.root / "output" / FINISHED_FILE_NAME

    def map(self, container_path: str) -> Path:
        """Where a container path really is on this instance."""
        p = PurePosixPath(container_path)
        if self.isolation == "folder" and (p == CONTAINER_ROOT or CONTAINER_ROOT in p.parents):
            return self.root.joinpath(*p.relative_to(CONTAINER_ROOT).parts)
        return Path(p)

    def inside(self, path: Path) -> bool:
        """Whether ``path`` lies in this host's own tree (so the agent may clear it)."""
        return path == self.root or self.root in path.parents

    def create(self) -> None:
        """Make the tree, emptying what an earlier run on the same root may have left."""
        for d in (self.input_dir, self.code_dir, self.model_dir, self.output_dir):
            if d.is_symlink() or d.is_file():
                d.unlink()
            elif d.exists():
                shutil.rmtree(d)
        for d in (
            self.config_dir,
            self.data_dir,
            self.code_dir,
            self.model_dir,
            self.output_data_dir,
            self.intermediate_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)


def resource_config(
    host: str, hosts: tuple[str, ...], instance_type: str, interface: str = NETWORK_INTERFACE
) -> dict[str, Any]:
    """The ``resourceconfig.json`` document."""
    return {
        "current_host": host,
        "current_instance_type": instance_type,
        "current_group_name": GROUP_NAME,
        "current_instance_group": GROUP_NAME,
        "hosts": list(hosts),
        "instance_groups": [
            {
                "instance_group_name": GROUP_NAME,
                "instance_type": instance_type,
                "hosts": list(hosts),
            }
        ],
        "network_interface_name": interface,
    }


def input_data_config(spec: JobSpec) -> dict[str, dict[str, str]]:
    """The ``inputdataconfig.json`` document: one entry per channel, its input mode the
    effective one (the channel's own, else the job's)."""
    out: dict[str, dict[str, str]] = {}
    for ch in spec.channels:
        entry: dict[str, str] = {}
        if ch.content_type is not None:
            entry["ContentType"] = ch.content_type
        entry["TrainingInputMode"] = ch.input_mode or spec.algorithm.training_input_mode
        entry["S3DistributionType"] = ch.data_distribution
        entry["RecordWrapperType"] = ch.record_wrapper_type  # as sent: None or RecordIO
        out[ch.name] = entry
    return out


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_config(
    layout: MlLayout,
    spec: JobSpec,
    host: str,
    hosts: tuple[str, ...],
    instance_type: str,
    interface: str = NETWORK_INTERFACE,
) -> None:
    """Write the three files under ``input/config``."""
    _write_json(layout.config_dir / "hyperparameters.json", dict(spec.hyperparameters))
    _write_json(layout.config_dir / "inputdataconfig.json", input_data_config(spec))
    _write_json(
        layout.config_dir / "resourceconfig.json",
        resource_config(host, hosts, instance_type, interface),
    )
