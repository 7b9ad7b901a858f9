"""From a job spec to what its training process is: the run plan.

Admission calls ``plan_run`` with the home's registry (``$SPOTRUN_HOME/config.toml``) and
stores the result with the job (``_codec``); agents execute that stored plan, so what was
admitted is what runs. The order:

1. ``SourceDir`` + ``EntryPoint`` in the request (spotrun's own script mode) run as
   given, whatever image the request also names;
2. ``AlgorithmName`` runs the built-in algorithm of that name;
3. ``TrainingImage`` runs what the registry maps it to;
4. no image, but the SDK's ``sagemaker_program`` and ``sagemaker_submit_directory``
   hyperparameters: SDK script mode.

A script runs as several data-parallel ranks under ``torchrun`` when the request's
``Environment`` sets ``SPOTRUN_PROCESSES_PER_HOST`` (``spotrun run --processes-per-host``)
or the SDK's ``distribution={"torch_distributed": {"enabled": True}}`` set
``sagemaker_torch_distributed_enabled`` (one rank per instance unless the variable says
more: these instances have no GPUs to count). On several instances the ranks of every
instance form one group (the agents' rendezvous), ``ranks`` on each.

Pure: no I/O. Whether the code and data can be read is admission's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from spotrun.errors import SpecError
from spotrun.images._algorithms import (
    BUILTIN_ALGORITHMS,
    BuiltinAlgorithm,
    find_algorithm,
    known_algorithms,
)
from spotrun.images._registry import (
    AlgorithmRef,
    BakedScript,
    ImageEntry,
    ImageRegistry,
    ScriptMode,
)
from spotrun.spec import JobSpec

SDK_PROGRAM = "sagemaker_program"
SDK_SUBMIT_DIRECTORY = "sagemaker_submit_directory"
SDK_LOG_LEVEL = "sagemaker_container_log_level"
#: what the SDK's ``distribution={"torch_distributed": {"enabled": True}}`` sets
SDK_TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
#: spotrun's own switch: this many torchrun ranks on each instance
PROCESSES_ENV = "SPOTRUN_PROCESSES_PER_HOST"
MAX_PROCESSES_PER_HOST = 64
#: hyperparameters the training toolkit keeps for itself besides ``sagemaker_*`` ones:
#: they are in hyperparameters.json and SM_HPS but never passed as script arguments
TOOLKIT_PRIVATE = frozenset({"_tuning_objective_metric", "default_user_module_name"})


def decode_hyperparameter(value: str) -> Any:
    """A hyperparameter as the SageMaker toolkit sees it: JSON-decoded when it decodes
    (``"\\"train.py\\""`` -> ``train.py``, ``"3"`` -> 3), else the string itself."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def is_user_argument(name: str) -> bool:
    """Whether the toolkit passes this hyperparameter to the script as ``--name value``."""
    return not name.startswith("sagemaker_") and name not in TOOLKIT_PRIVATE


@dataclass(frozen=True)
class ScriptRun:
    """Run ``entry_point`` out of the code at ``source`` (a folder, URI or tarball)."""

    source: str
    entry_point: str
    #: True: arguments as the SageMaker toolkit builds them (decoded values, no
    #: ``sagemaker_*``); False: spotrun's script mode, every value exactly as given
    toolkit_args: bool
    #: the image mapping that led here; None for the request's own SourceDir/EntryPoint
    mapped_by: ImageEntry | None = None
    #: ranks per instance under torchrun; None: the script alone, one process
    ranks: int | None = None


@dataclass(frozen=True)
class SdkScriptRun:
    """SageMaker SDK script mode: ``program`` out of the ``submit_directory`` tarball."""

    program: str
    submit_directory: str
    mapped_by: ImageEntry | None = None
    #: ranks per instance under torchrun; None: the script alone, one process
    ranks: int | None = None


@dataclass(frozen=True)
class AlgorithmRun:
    """A built-in algorithm."""

    algorithm: BuiltinAlgorithm
    mapped_by: ImageEntry | None = None


RunPlan = ScriptRun | SdkScriptRun | AlgorithmRun


def _relative_path(value: str, field: str) -> str:
    parts = value.split("/")
    if not value or value.startswith("/") or ".." in parts:
        raise SpecError(field, f"{value!r} must be a relative path inside the code (no '..')")
    return value


def sdk_script(hyperparameters: Mapping[str, str]) -> tuple[str, str] | None:
    """(program, submit directory) from the SDK's hyperparameters, or None if either is
    missing; ``SpecError`` if they are there but unusable."""
    if SDK_PROGRAM not in hyperparameters or SDK_SUBMIT_DIRECTORY not in hyperparameters:
        return None
    program = decode_hyperparameter(hyperparameters[SDK_PROGRAM])
    submit = decode_hyperparameter(hyperparameters[SDK_SUBMIT_DIRECTORY])
    if not isinstance(program, str):
        raise SpecError(f"HyperParameters.{SDK_PROGRAM}", f"must be a file name, got {program!r}")
    if not isinstance(submit, str) or not submit:
        raise SpecError(f"HyperParameters.{SDK_SUBMIT_DIRECTORY}", f"must be a URI, got {submit!r}")
    return _relative_path(program, f"HyperParameters.{SDK_PROGRAM}"), submit


def missing_mapping_hint(image: str, config_path: Path | None) -> str:
    """What to add to the config file so that ``image`` maps to something."""
    where = config_path if config_path is not None else "$SPOTRUN_HOME/config.toml"
    return (
        f"add an entry to {where}, e.g. "
        f'[images."{image}"] source_dir = "/path/to/code" entry_point = "train.py" '
        "(or script_mode = true for an image that runs the SageMaker SDK's "
        'sagemaker_program, or algorithm = "<name>" for a built-in algorithm)'
    )


def plan_run(
    spec: JobSpec,
    registry: ImageRegistry,
    algorithms: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS,
) -> RunPlan:
    """What ``spec`` runs; ``SpecError`` naming the field when it maps to nothing."""
    plan = _choose(spec, registry, algorithms)
    ranks = _ranks(spec, plan)
    if ranks is None:
        return plan
    assert not isinstance(plan, AlgorithmRun)
    return replace(plan, ranks=ranks)


def _choose(
    spec: JobSpec, registry: ImageRegistry, algorithms: Mapping[str, BuiltinAlgorithm]
) -> RunPlan:
    algo = spec.algorithm
    if algo.source_dir is not None and algo.entry_point is not None:
        return ScriptRun(algo.source_dir, algo.entry_point, toolkit_args=False)
    if algo.algorithm_name is not None:
        found = find_algorithm(algo.algorithm_name, algorithms)
        if found is None:
            raise SpecError(
                "AlgorithmSpecification.AlgorithmName",
                f"{algo.algorithm_name!r} is not a built-in algorithm of this spotrun; "
                f"built-in algorithms: {known_algorithms(algorithms)}",
            )
        return AlgorithmRun(found)
    if algo.training_image is not None:
        return _plan_image(spec, algo.training_image, registry, algorithms)
    sdk = sdk_script(spec.hyperparameters)
    if sdk is not None:
        return SdkScriptRun(*sdk)
    raise SpecError(
        "AlgorithmSpecification",
        "nothing to run: give a TrainingImage, an AlgorithmName, SourceDir and EntryPoint, "
        f"or the SDK's {SDK_PROGRAM} and {SDK_SUBMIT_DIRECTORY} hyperparameters",
    )


def _plan_image(
    spec: JobSpec,
    image: str,
    registry: ImageRegistry,
    algorithms: Mapping[str, BuiltinAlgorithm],
) -> RunPlan:
    field = "AlgorithmSpecification.TrainingImage"
    entry = registry.lookup(image)
    if entry is None:
        raise SpecError(
            field,
            f"{image!r} is not mapped to anything runnable (spotrun runs no containers); "
            + missing_mapping_hint(image, registry.config_path),
        )
    target = entry.target
    if isinstance(target, BakedScript):
        return ScriptRun(target.source_dir, target.entry_point, toolkit_args=True, mapped_by=entry)
    if isinstance(target, ScriptMode):
        if target.algorithm is not None and SDK_PROGRAM not in spec.hyperparameters:
            # as the image does on SageMaker: no script given, so the built-in algorithm
            algorithm = AlgorithmRef(target.algorithm)
            return _mapped_algorithm(image, entry, algorithm, registry, algorithms)
        sdk = sdk_script(spec.hyperparameters)
        if sdk is None:
            raise SpecError(
                "HyperParameters",
                f"image {image!r} runs in script mode ({entry.origin}), which needs the "
                f"hyperparameters {SDK_PROGRAM} and {SDK_SUBMIT_DIRECTORY} (the SageMaker "
                "SDK's framework estimators set them from entry_point and source_dir); "
                "to run something else, map the image to a script or an algorithm in "
                f"{registry.config_path or '$SPOTRUN_HOME/config.toml'}",
            )
        return SdkScriptRun(*sdk, mapped_by=entry)
    assert isinstance(target, AlgorithmRef)
    return _mapped_algorithm(image, entry, target, registry, algorithms)


def _mapped_algorithm(
    image: str,
    entry: ImageEntry,
    target: AlgorithmRef,
    registry: ImageRegistry,
    algorithms: Mapping[str, BuiltinAlgorithm],
) -> AlgorithmRun:
    """The built-in algorithm an image stands for; ``SpecError`` if spotrun lacks it."""
    found = find_algorithm(target.name, algorithms)
    if found is not None:
        return AlgorithmRun(found, mapped_by=entry)
    field = "AlgorithmSpecification.TrainingImage"
    if target.aws_image:
        raise SpecError(
            field,
            f"{image!r} is AWS's image of SageMaker's built-in algorithm {target.name!r}, "
            "which spotrun does not have (spotrun runs no containers, only built-ins of its "
            f"own in their place); spotrun's built-in algorithms: "
            f"{known_algorithms(algorithms)}; to run code of yours under this image name, "
            + missing_mapping_hint(image, registry.config_path),
        )
    raise SpecError(
        field,
        f"{image!r} maps to the built-in algorithm {target.name!r} ({entry.origin}), "
        f"which this spotrun does not have; built-in algorithms: "
        f"{known_algorithms(algorithms)}",
    )


def _ranks(spec: JobSpec, plan: RunPlan) -> int | None:
    """Ranks per instance under torchrun, from the environment or the SDK's switch."""
    raw = spec.environment.get(PROCESSES_ENV)
    sdk = decode_hyperparameter(spec.hyperparameters.get(SDK_TORCH_DISTRIBUTED, "false"))
    if not isinstance(sdk, bool):  # the SDK writes JSON true or false; "1" is a typo
        raise SpecError(
            f"HyperParameters.{SDK_TORCH_DISTRIBUTED}", f"must be true or false, got {sdk!r}"
        )
    if raw is None and not sdk:
        return None
    field = (
        f"Environment.{PROCESSES_ENV}"
        if raw is not None
        else f"HyperParameters.{SDK_TORCH_DISTRIBUTED}"
    )
    ranks = 1
    if raw is not None:
        text = raw.strip()
        # ASCII digits only: int() refuses some characters str.isdigit() accepts ("²")
        usable = text.isascii() and text.isdigit() and len(text) <= 3
        if not usable or not 1 <= int(text) <= MAX_PROCESSES_PER_HOST:
            raise SpecError(
                field, f"must be a whole number from 1 to {MAX_PROCESSES_PER_HOST}, got {raw!r}"
            )
        ranks = int(text)
    if isinstance(plan, AlgorithmRun):
        raise SpecError(
            field, "built-in algorithms run as one process per instance; torchrun is for scripts"
        )
    entry = plan.entry_point if isinstance(plan, ScriptRun) else plan.program
    # spotrun's own script mode runs any entry point with Python; the toolkit's kinds
    # would run a .sh with /bin/sh, which torchrun cannot start as ranks
    toolkit_kind = isinstance(plan, SdkScriptRun) or plan.toolkit_args
    # the suffix as the agent's script_command sees it (a file named ".py" has none)
    if toolkit_kind and PurePosixPath(entry).suffix != ".py":
        raise SpecError(field, f"torchrun runs Python scripts, and {entry!r} is not a .py file")
    return ranks
