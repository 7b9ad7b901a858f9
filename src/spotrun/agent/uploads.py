"""Side outputs sent up while the job runs: TensorBoard, Debugger tensors, profiler data.

SageMaker copies three folders to S3 continuously, not only at the end: the
``TensorBoardOutputConfig.LocalPath``, the ``DebugHookConfig.LocalPath`` (smdebug's
tensors) and the folder smdebug's profiler writes to. The agent does the same:

* ``write_side_configs`` writes what smdebug reads before the training starts, in
  ``input/config``: ``debughookconfig.json`` and ``tensorboardoutputconfig.json`` (the
  request members as given), ``profilerconfig.json`` unless ``DisableProfiler`` is true.
  A container path in them (``LocalPath``) is the one the training really sees on this
  instance: ``/opt/ml/...`` is mapped into the instance's folder as the checkpoint
  ``LocalPath`` is. It returns the variables that point smdebug at those files
  (``SMDEBUG_CONFIG_FILE_PATH``, ``TENSORBOARD_CONFIG_FILE_PATH``, ``SMPROFILER_CONFIG_PATH``),
  since without a mount namespace smdebug's ``/opt/ml/input/config`` defaults are not this
  instance's.
* ``OutputUploads`` runs, in a thread of its own, a pass over every folder each
  ``interval`` seconds: files that are new or changed since the last pass (by size and
  mtime) go up, nothing is deleted remotely. ``finish`` stops the thread and makes one last
  pass; the agent calls it once the training has exited, however the attempt ended, a spot
  interruption included. A file still being appended to (a TensorBoard event file) goes up
  again at the next pass after it changed.

Several instances: every host mirrors its own folders. TensorBoard event files are named
by the process that writes them, not by host, so on a job of several instances each host's
go under a sub-prefix of its own (``tensorboard-output/algo-2/...``; TensorBoard shows each
as a run) rather than overwrite one another. smdebug already names its files per worker
and node (``worker_0``, ``algo-1``), and its readers expect one flat ``debug-output`` and
``profiler-output`` per job, so those stay shared, as on SageMaker.

Not done here: SageMaker's own system monitor (CPU/GPU utilisation every
``ProfilingIntervalInMilliseconds`` under ``profiler-output/system``); only what the
training writes is uploaded.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun.agent.layout import MlLayout
from spotrun.spec import JobSpec
from spotrun.spec._outputs import (
    SideOutputs,
    debug_uri,
    profiler_uri,
    side_outputs,
    tensorboard_uri,
)
from spotrun.storage import local_files, upload_file

#: how often the side-output folders are scanned; SageMaker says "continuously"
UPLOAD_SECONDS = 5.0
#: how long the end of an attempt waits for an upload pass in progress
STOP_WAIT = 60.0
UPLOAD_ENV = "SPOTRUN_OUTPUT_UPLOAD_SECONDS"
DEBUG_CONFIG = "debughookconfig.json"
TENSORBOARD_CONFIG = "tensorboardoutputconfig.json"
PROFILER_CONFIG = "profilerconfig.json"
#: the variables smdebug reads the three files' paths from
DEBUG_CONFIG_ENV = "SMDEBUG_CONFIG_FILE_PATH"
TENSORBOARD_CONFIG_ENV = "TENSORBOARD_CONFIG_FILE_PATH"
PROFILER_CONFIG_ENV = "SMPROFILER_CONFIG_PATH"


@dataclass(frozen=True)
class OutputFolder:
    """One folder on this instance mirrored to one prefix while the job runs."""

    member: str  # the request member it comes from, for messages
    local: Path
    uri: str  # a prefix ending in "/"


def output_folders(spec: JobSpec, layout: MlLayout, host: str) -> tuple[OutputFolder, ...]:
    """The folders this host uploads, with where each lands. ``SpecError`` if a member is
    malformed."""
    outs = side_outputs(spec.request)
    found: list[OutputFolder] = []
    if outs.tensorboard is not None:
        uri = tensorboard_uri(spec, outs.tensorboard)
        if spec.resources.instance_count > 1:
            uri += f"{host}/"  # event files are not named by host: keep hosts apart
        local = layout.map(outs.tensorboard.local_path)
        found.append(OutputFolder("TensorBoardOutputConfig", local, uri))
    if outs.debug_hook is not None:
        local = layout.map(outs.debug_hook.local_path)
        found.append(OutputFolder("DebugHookConfig", local, debug_uri(spec, outs.debug_hook)))
    if outs.profiler is not None:
        local = layout.map(outs.profiler.local_path)
        found.append(OutputFolder("ProfilerConfig", local, profiler_uri(spec, outs.profiler)))
    return tuple(found)


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def side_config_documents(
    spec: JobSpec, layout: MlLayout, outs: SideOutputs | None = None
) -> dict[str, dict[str, Any]]:
    """File name -> document, for the side-output config files this job calls for."""
    outs = side_outputs(spec.request) if outs is None else outs
    docs: dict[str, dict[str, Any]] = {}
    if outs.debug_hook is not None:
        doc = copy.deepcopy(dict(spec.request["DebugHookConfig"]))
        doc["LocalPath"] = str(layout.map(outs.debug_hook.local_path))
        docs[DEBUG_CONFIG] = doc
    if outs.tensorboard is not None:
        docs[TENSORBOARD_CONFIG] = {
            "LocalPath": str(layout.map(outs.tensorboard.local_path)),
            "S3OutputPath": outs.tensorboard.s3_output_path,
        }
    if outs.profiler is not None:
        doc = copy.deepcopy(dict(spec.request["ProfilerConfig"]))
        params = dict(doc.get("ProfilingParameters") or {})
        # empty ProfilingParameters leaves smdebug's framework profiler off: adding a
        # LocalPath would switch it on, so the path is only mapped where there are some
        if params:
            key = next((k for k in params if k.lower() == "localpath"), "LocalPath")
            params[key] = str(layout.map(outs.profiler.local_path))
            doc["ProfilingParameters"] = params
        docs[PROFILER_CONFIG] = doc
    return docs


def write_side_configs(spec: JobSpec, layout: MlLayout) -> dict[str, str]:
    """Write the side-output config files into ``input/config``; returns the variables
    that name them for smdebug. ``SpecError`` if a member is malformed."""
    env_of = {
        DEBUG_CONFIG: DEBUG_CONFIG_ENV,
        TENSORBOARD_CONFIG: TENSORBOARD_CONFIG_ENV,
        PROFILER_CONFIG: PROFILER_CONFIG_ENV,
    }
    env: dict[str, str] = {}
    for name, doc in side_config_documents(spec, layout).items():
        path = layout.config_dir / name
        _write_json(path, doc)
        env[env_of[name]] = str(path)
    return env


class FolderUploader:
    """Uploads the files of one folder that are new or changed since its last pass."""

    def __init__(self, folder: OutputFolder) -> None:
        self.folder = folder
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)

    def upload_changed(self) -> int:
        """One pass; returns how many files went up. Storage errors propagate (what is
        left goes up next pass)."""
        count = 0
        for rel, stamp in sorted(local_files(self.folder.local).items()):
            if self._sent.get(rel) == stamp:
                continue
            try:
                upload_file(self.folder.local / rel, self.folder.uri + rel)
            except FileNotFoundError:  # deleted since the scan: nothing left to send
                continue
            # the stamp from before the copy: a write during it makes the next pass resend
            self._sent[rel] = stamp
            count += 1
        return count


class OutputUploads:
    """The side-output folders of one host, mirrored in a background thread."""

    def __init__(
        self,
        folders: tuple[OutputFolder, ...],
        interval: float,
        say: Callable[[str], None],
    ) -> None:
        self.uploaders = [FolderUploader(f) for f in folders]
        self.interval = interval
        self._say = say
        self._errors: dict[str, str] = {}  # the last failure per member, said once
        self._stop = threading.Event()
        self._dropped: set[str] = set()  # members to retire after a last pass (``drop``)
        self._thread = threading.Thread(target=self._loop, name="output-uploads", daemon=True)

    def start(self) -> None:
        for up in self.uploaders:
            f = up.folder
            self._say(
                f"spotrun-agent: uploading {f.member} output from {f.local} to {f.uri} "
                f"every {self.interval:g} s"
            )
        self._thread.start()

    def stop(self) -> bool:
        """Stop the thread after the pass in progress, without another; False if that pass
        is still running after ``STOP_WAIT`` seconds (a storage that hangs), which is left
        to itself rather than holding up the end of the attempt."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_WAIT)
        return not self._thread.is_alive()

    def has(self, member: str) -> bool:
        return member not in self._dropped and any(
            up.folder.member == member for up in self.uploaders
        )

    def drop(self, member: str) -> None:
        """Stop mirroring ``member``'s folder after one last pass over it (what was written
        so far is kept). The pass is the thread's, so the caller (the agent's watch loop,
        which must pass a notice on at once) never waits for an upload."""
        self._dropped.add(member)

    def _retire(self) -> None:
        for member in list(self._dropped):
            for up in self.uploaders:
                if up.folder.member == member:
                    self._pass(up, final=True)
            self.uploaders = [up for up in self.uploaders if up.folder.member != member]
            self._dropped.discard(member)

    def finish(self) -> None:
        """Stop the thread, then one last pass over every folder (none while a pass of the
        thread's still hangs: the two would race over the same files)."""
        if not self.stop():
            self._say(
                f"spotrun-agent: an output upload is still running after {STOP_WAIT:g} s; "
                "no last pass"
            )
            return
        self._retire()
        for up in self.uploaders:
            self._pass(up, final=True)

    def upload_now(self) -> None:
        for up in self.uploaders:
            self._pass(up, final=False)

    def _pass(self, up: FolderUploader, final: bool) -> None:
        member = up.folder.member
        try:
            up.upload_changed()
        except Exception as e:  # keep going: the next pass tries again
            what = "final upload" if final else "upload"
            message = f"spotrun-agent: {what} of {member} output to {up.folder.uri} failed: {e}"
            if final or self._errors.get(member) != message:
                self._say(message)
            self._errors[member] = message
        else:
            self._errors.pop(member, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._retire()
            self.upload_now()


def upload_interval(env: Mapping[str, str]) -> float:
    """``SPOTRUN_OUTPUT_UPLOAD_SECONDS`` if it holds a positive number, else the default."""
    raw = env.get(UPLOAD_ENV)
    try:
        value = float(raw) if raw else UPLOAD_SECONDS
    except ValueError:
        return UPLOAD_SECONDS
    return value if value > 0 else UPLOAD_SECONDS


def prepare_side_outputs(
    spec: JobSpec,
    layout: MlLayout,
    host: str,
    env: Mapping[str, str],
    say: Callable[[str], None],
) -> tuple[OutputUploads | None, dict[str, str]]:
    """Write the config files and make the folders, before the training starts.

    Returns the uploads to ``start`` once the training runs (None when the job asks for
    no side output) and the variables to add to the training's environment. ``SpecError``
    if a member is malformed; ``OSError`` if a folder cannot be made.
    """
    extra = write_side_configs(spec, layout)
    folders = output_folders(spec, layout, host)
    if not folders:
        return None, extra
    for f in folders:
        f.local.mkdir(parents=True, exist_ok=True)
    return OutputUploads(folders, upload_interval(env), say), extra


__all__ = [
    "OutputFolder",
    "OutputUploads",
    "output_folders",
    "prepare_side_outputs",
    "upload_interval",
    "write_side_configs",
]
