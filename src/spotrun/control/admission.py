"""Admission: the checks at submission that need the outside world.

``spec.parse_spec`` checks the request's shape; here we check what it refers to: the
instance type is in the catalog, the job maps to something runnable (``spotrun.images``:
its image, algorithm or script), that code can be read, every channel can be read. All
checks run before anything is written, so a rejected job leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from spotrun.errors import SpecError, SpotrunError
from spotrun.images import (
    BUILTIN_ALGORITHMS,
    NO_CHECKPOINT_MAX_WAIT,
    SDK_SUBMIT_DIRECTORY,
    AlgorithmRun,
    BuiltinAlgorithm,
    ImageRegistry,
    RunPlan,
    ScriptRun,
    SdkScriptRun,
    plan_run,
)
from spotrun.spec import POOLS_TAG, JobSpec, MetricDefinition, parse_spec

#: suffixes of a single-object code archive (its entry point cannot be checked before)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def admit(
    request: Mapping[str, Any],
    known_type: Callable[[str], bool],
    known_types: Callable[[], list[str]],
    check_readable: Callable[[str], None],
    images: ImageRegistry | None = None,
    algorithms: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS,
    strict: bool = False,
) -> JobSpec:
    """Validate a request completely; raises ``SpecError`` naming the field."""
    spec, _plan = admit_plan(
        request, known_type, known_types, check_readable, images, algorithms, strict
    )
    return spec


def admit_plan(
    request: Mapping[str, Any],
    known_type: Callable[[str], bool],
    known_types: Callable[[], list[str]],
    check_readable: Callable[[str], None],
    images: ImageRegistry | None = None,
    algorithms: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS,
    strict: bool = False,
    private_network: bool = True,
    stored: bool = False,
    object_sizes: Callable[[str], Mapping[str, int]] | None = None,
) -> tuple[JobSpec, RunPlan]:
    """Validate a request completely and decide what it runs, once; ``SpecError`` names
    the field. The plan is stored with the job and executed by its agents.

    ``images`` is the service's image registry (``Settings.images``); without it only the
    built-in defaults map images. The spec is returned as parsed: the mapping is not
    written into it, so the stored request echoes the user's TrainingImage unchanged.
    ``private_network``: whether the provider gives each instance a network of its own,
    which a network-isolated job of several instances needs. ``stored``: the request was
    admitted before (a tuning job's definition); see ``parse_spec``. ``object_sizes`` lists
    a channel's objects with their sizes, for ``ResourceConfig.VolumeSizeInGB``; without it
    the volume is not checked. One
    addition, SageMaker's: a job that runs a built-in algorithm (by AlgorithmName or by an
    image mapped to one) and names no MetricDefinitions gets the algorithm's own
    (``BuiltinAlgorithm.metrics``); a job's own definitions are kept exactly.
    """
    # strict: SageMaker's required members
    spec = parse_spec(request, strict=strict, stored=stored)
    isolated = spec.request.get("EnableNetworkIsolation") is True
    if isolated and spec.resources.elastic:
        raise SpecError(
            "EnableNetworkIsolation",
            "an elastic job (spotrun:min-instance-count) changes its instances from round "
            "to round, and an isolated training's network is cut to the instances it "
            "starts with; leave one of them out",
        )
    if isolated and spec.resources.instance_count > 1 and not private_network:
        raise SpecError(
            "EnableNetworkIsolation",
            "with InstanceCount > 1 the instances must reach each other and nothing else, "
            "which needs instances with a network of their own (the local provider's "
            "network = netns, as root); use InstanceCount 1 or such a provider",
        )
    itype = spec.resources.instance_type
    if not known_type(itype):
        sample = ", ".join(f"ml.{t}" for t in sorted(known_types())[:8])
        raise SpecError(
            "ResourceConfig.InstanceType",
            f"{itype!r} is not in the instance catalog; known types include {sample}, …",
        )
    for choice in spec.scheduling.pools:
        if choice.instance_type is not None and not known_type(choice.instance_type):
            tags = [t.get("Key") for t in spec.request.get("Tags") or []]
            raise SpecError(
                f"Tags[{len(tags) - 1 - tags[::-1].index(POOLS_TAG)}].Value",
                f"{choice.instance_type!r} is not in the instance catalog; known types "
                f"include {', '.join(f'ml.{t}' for t in sorted(known_types())[:8])}, …",
            )
    plan = plan_run(spec, images if images is not None else ImageRegistry(), algorithms)
    check_plan(spec, plan, check_readable)
    spec = with_builtin_metrics(spec, plan)
    for i, ch in enumerate(spec.channels):
        try:
            check_readable(ch.uri)
        except SpotrunError as e:
            raise SpecError(
                f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri",
                f"channel {ch.name!r} cannot be read: {e}",
            ) from None
    if object_sizes is not None:
        check_volume(spec, object_sizes)
    return spec, plan


def check_volume(spec: JobSpec, object_sizes: Callable[[str], Mapping[str, int]]) -> None:
    """``ResourceConfig.VolumeSizeInGB`` holds what each instance downloads: its File-mode
    channels (as stored; a ``ShardedByS3Key`` channel only the instance's share), as on
    SageMaker, where a bigger download fails the job. Pipe channels are streamed, not
    stored. A size of 0 (instance storage on AWS) sets no limit."""
    gb = spec.resources.volume_size_gb
    if gb == 0:
        return
    count = spec.resources.instance_count
    per_host = [0] * count
    for i, ch in enumerate(spec.channels):
        if (ch.input_mode or spec.algorithm.training_input_mode) == "Pipe":
            continue
        try:
            sizes = object_sizes(ch.uri)
        except SpotrunError as e:
            raise SpecError(
                f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri",
                f"channel {ch.name!r} cannot be listed: {e}",
            ) from None
        names = sorted(sizes)
        for host in range(count):
            sharded = ch.data_distribution == "ShardedByS3Key" and count > 1
            share = names[host::count] if sharded else names
            per_host[host] += sum(sizes[n] for n in share)
    most = max(per_host)
    if most > gb * 2**30:
        need = -(-most // 2**30)  # whole GB, rounded up
        raise SpecError(
            "ResourceConfig.VolumeSizeInGB",
            f"is {gb}; the File-mode channels put {most / 2**30:.2f} GB on an instance, more "
            f"than its volume: give at least {need}, or stream the channels in Pipe mode",
        )


def check_plan(spec: JobSpec, plan: RunPlan, check_readable: Callable[[str], None]) -> None:
    """The plan's code can be read, and its algorithm may run as long as the job may wait."""
    if isinstance(plan, ScriptRun):
        _check_script(plan, check_readable)
    elif isinstance(plan, SdkScriptRun):
        try:
            check_readable(plan.submit_directory)
        except SpotrunError as e:
            raise SpecError(
                f"HyperParameters.{SDK_SUBMIT_DIRECTORY}",
                f"the SDK's source {plan.submit_directory!r} cannot be read: {e}",
            ) from None
    elif isinstance(plan, AlgorithmRun):
        _check_algorithm(spec, plan)


def with_builtin_metrics(spec: JobSpec, plan: RunPlan) -> JobSpec:
    """``spec`` with its built-in algorithm's MetricDefinitions when it names none (its
    stored request, and so Describe's echo, included); otherwise ``spec`` itself."""
    if not isinstance(plan, AlgorithmRun) or spec.algorithm.metric_definitions:
        return spec
    if not plan.algorithm.metrics:
        return spec
    defined = tuple(MetricDefinition(name, regex) for name, regex in plan.algorithm.metrics)
    filled = replace(spec, algorithm=replace(spec.algorithm, metric_definitions=defined))
    return replace(filled, request=filled.to_api())


def _local_folder(source: str) -> Path | None:
    """The folder a code source names on this machine, or None for a remote URI."""
    if source.startswith("file://"):
        return Path(source.removeprefix("file://"))
    if "://" not in source:
        return Path(source)
    return None


def _check_script(plan: ScriptRun, check_readable: Callable[[str], None]) -> None:
    if plan.mapped_by is None:
        src_field = "AlgorithmSpecification.SourceDir"
        entry_field = "AlgorithmSpecification.EntryPoint"
        via = ""
    else:
        src_field = entry_field = "AlgorithmSpecification.TrainingImage"
        via = f" (the image's mapping in {plan.mapped_by.origin})"
    folder = _local_folder(plan.source)
    if folder is not None:
        if folder.is_file() and folder.name.endswith(ARCHIVE_SUFFIXES):
            return  # a local code tarball: unpacked, and its entry point checked, at run time
        if not folder.is_dir():
            raise SpecError(src_field, f"{folder} is not a folder{via}")
        entry = folder / plan.entry_point
        if not entry.is_file():
            raise SpecError(entry_field, f"{entry} does not exist{via}")
        return
    target = plan.source
    if not target.endswith(ARCHIVE_SUFFIXES):
        target = f"{target.rstrip('/')}/{plan.entry_point}"
    try:
        check_readable(target)
    except SpotrunError as e:
        raise SpecError(src_field, f"the code cannot be read{via}: {e}") from None


def _check_algorithm(spec: JobSpec, plan: AlgorithmRun) -> None:
    """SageMaker's 60-minute rule for algorithms that cannot resume from a checkpoint, and
    the input mode spotrun's built-ins read (files)."""
    algo = plan.algorithm
    if spec.algorithm.training_input_mode == "Pipe":
        raise SpecError(
            "AlgorithmSpecification.TrainingInputMode",
            f"is Pipe; spotrun's built-in {algo.name!r} reads its channels as files: "
            "use File (or FastFile)",
        )
    for i, ch in enumerate(spec.channels):
        if ch.input_mode == "Pipe":
            raise SpecError(
                f"InputDataConfig[{i}].InputMode",
                f"is Pipe; spotrun's built-in {algo.name!r} reads channel {ch.name!r} as "
                "files: use File (or FastFile)",
            )
    wait = spec.stopping.max_wait_seconds
    if spec.spot and not algo.supports_checkpoints and (wait or 0) > NO_CHECKPOINT_MAX_WAIT:
        raise SpecError(
            "StoppingCondition.MaxWaitTimeInSeconds",
            f"is {wait}; the built-in algorithm {algo.name!r} does not checkpoint, so a "
            f"spot job of it may wait at most {NO_CHECKPOINT_MAX_WAIT} seconds",
        )
