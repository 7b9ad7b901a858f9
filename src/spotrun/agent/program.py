"""The training process a run plan stands for: its code in place and its command line.

``spotrun.images.plan_run`` decides *what* a job runs (admission made the same decision);
here that becomes concrete on this host: the code is fetched into ``/opt/ml/code`` and
the command line and the script-facing facts (``SM_USER_ARGS``, ``SM_MODULE_DIR``,
``SM_HPS``, …) are worked out the way the SageMaker training toolkit does for each kind:

==================  =========================================  ==========================
plan                command                                    hyperparameter arguments
==================  =========================================  ==========================
SourceDir (spotrun)  ``python <EntryPoint>``                    every one, exactly as given
image -> script      ``python <entry_point>``                    toolkit style (below)
SDK script mode      ``python <sagemaker_program>`` (``.sh``:   toolkit style
                     ``/bin/sh``)
algorithm            ``python -m <module>``                     none (hyperparameters.json)
==================  =========================================  ==========================

A script with ranks (``SPOTRUN_PROCESSES_PER_HOST``, or the SDK's torch_distributed) runs
as ``python -m torch.distributed.run --standalone --nproc_per_node=N … -m
spotrun.toolkit.rank <script> <args>`` (see ``torchrun_command``). On several instances
the ``--standalone`` becomes the job's ``Rendezvous``: ``--nnodes``, ``--node_rank`` and
the leader's ``--master_addr``/``--master_port``, so the ranks of every host form one group.

Toolkit style: values JSON-decoded when they decode (``"\\"adam\\""`` -> ``adam``),
``sagemaker_*`` (and the tuner's ``_tuning_objective_metric``) left out, sorted by name,
``--name value`` (``-n value`` for one-letter names), values rendered as the toolkit
does (``str()``; a dict becomes ``k=v,k2=v2``).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spotrun.agent.outcome import JobInputError
from spotrun.agent.source import fetch_code
from spotrun.images import (
    SDK_LOG_LEVEL,
    SDK_SUBMIT_DIRECTORY,
    AlgorithmRun,
    RunPlan,
    ScriptRun,
    SdkScriptRun,
    decode_hyperparameter,
    is_user_argument,
)

LOG_LEVEL = 20  # logging.INFO, the toolkit's default
#: what each torchrun rank starts through (see its docstring)
RANK_MODULE = "spotrun.toolkit.rank"
REQUIREMENTS = "requirements.txt"


@dataclass(frozen=True)
class Rendezvous:
    """Where the ranks of a multi-instance attempt meet: algo-1's address, as it published
    it through the server, and this host's place among the attempt's hosts."""

    nodes: int  # instances in the attempt
    node_rank: int  # this host's index among them (algo-1 is 0)
    master_addr: str
    master_port: int

    @classmethod
    def parse(cls, address: str, nodes: int, node_rank: int) -> Rendezvous:
        """From the ``ip:port`` the leader published."""
        addr, _, port = address.rpartition(":")
        return cls(nodes, node_rank, addr, int(port))


@dataclass(frozen=True)
class Program:
    """What to start, and how the ``SM_*`` variables describe it."""

    argv: tuple[str, ...]
    #: ``SM_USER_ENTRY_POINT`` / ``user_entry_point``
    entry_point: str
    #: ``SM_MODULE_DIR``: the code folder, or the SDK's submit directory URI
    module_dir: str
    module_name: str
    #: ``SM_USER_ARGS``: the hyperparameter part of ``argv``
    user_args: tuple[str, ...]
    #: ``SM_HPS`` / ``SM_HP_<NAME>``: as given (spotrun's script mode) or JSON-decoded
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    log_level: int = LOG_LEVEL
    #: folders to put first on the process's PYTHONPATH (the code, so its modules import)
    python_path: tuple[str, ...] = ()


def hyperparameter_args(hyperparameters: Mapping[str, str]) -> list[str]:
    """spotrun's script mode: ``--name value`` pairs, sorted by name, values as given."""
    args: list[str] = []
    for name in sorted(hyperparameters):
        args += [f"--{name}", hyperparameters[name]]
    return args


def decoded_hyperparameters(hyperparameters: Mapping[str, str]) -> dict[str, Any]:
    """Every hyperparameter, JSON-decoded where it decodes (the toolkit's ``SM_HPS``)."""
    return {k: decode_hyperparameter(v) for k, v in hyperparameters.items()}


def _toolkit_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def toolkit_args(hyperparameters: Mapping[str, str]) -> list[str]:
    """The script's arguments as the SageMaker training toolkit builds them."""
    decoded = decoded_hyperparameters(hyperparameters)
    args: list[str] = []
    for name in sorted(k for k in decoded if is_user_argument(k)):
        args += [f"--{name}" if len(name) > 1 else f"-{name}", _toolkit_value(decoded[name])]
    return args


def toolkit_log_level(hyperparameters: Mapping[str, str]) -> int:
    """``SM_LOG_LEVEL``: the SDK's ``sagemaker_container_log_level``, else INFO."""
    level = decode_hyperparameter(hyperparameters.get(SDK_LOG_LEVEL, str(LOG_LEVEL)))
    return level if isinstance(level, int) and not isinstance(level, bool) else LOG_LEVEL


def module_name(entry_point: str) -> str:
    name = entry_point.rsplit("/", 1)[-1]
    for suffix in (".py", ".sh"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def script_command(entry: Path) -> list[str]:
    """How the toolkit starts a user entry point: Python files with the Python running
    spotrun, shell scripts with ``/bin/sh``, anything else as an executable."""
    if entry.suffix == ".py":
        return [sys.executable, str(entry)]
    if entry.suffix == ".sh":
        return ["/bin/sh", str(entry)]
    return [str(entry)]


def _entry_in(code_dir: Path, entry_point: str, missing: str) -> Path:
    entry = code_dir / entry_point
    if not entry.is_file():
        raise JobInputError(missing)
    return entry


def prepare_program(
    plan: RunPlan,
    hyperparameters: Mapping[str, str],
    code_dir: Path,
    say: Callable[[str], None],
    *,
    stop_grace: float,
) -> Program:
    """Fetch the plan's code into ``code_dir`` and build its command line.

    ``JobInputError`` (the job's failure reason) when the code cannot be fetched or the
    entry point is not in it. ``say`` reports what the agent does not do (install a
    ``requirements.txt``, say) in the job's log. ``stop_grace`` is the attempt's: torchrun
    gives its ranks that long to save before it kills them. On several hosts, ``joined``
    then points torchrun at the attempt's rendezvous.
    """
    if isinstance(plan, ScriptRun):
        return _script(plan, hyperparameters, code_dir, say, stop_grace)
    if isinstance(plan, SdkScriptRun):
        return _sdk_script(plan, hyperparameters, code_dir, say, stop_grace)
    assert isinstance(plan, AlgorithmRun)
    module = plan.algorithm.module
    return Program(
        argv=(sys.executable, "-m", module),
        entry_point=module,
        module_dir=str(code_dir),
        module_name=module.rsplit(".", 1)[-1],
        user_args=(),
        hyperparameters=decoded_hyperparameters(hyperparameters),
        log_level=toolkit_log_level(hyperparameters),
    )


def _script(
    plan: ScriptRun,
    hyperparameters: Mapping[str, str],
    code_dir: Path,
    say: Callable[[str], None],
    stop_grace: float,
) -> Program:
    if plan.mapped_by is None:
        fetch_code(plan.source, code_dir, "SourceDir")
        entry = _entry_in(
            code_dir,
            plan.entry_point,
            f"ClientError: EntryPoint {plan.entry_point!r} is not a file in SourceDir "
            f"{plan.source!r}",
        )
        args = hyperparameter_args(hyperparameters)
        return Program(
            # always Python, whatever the suffix: spotrun's script mode runs Python scripts
            argv=_command((sys.executable, str(entry)), entry, args, plan.ranks, stop_grace),
            entry_point=plan.entry_point,
            module_dir=str(code_dir),
            module_name=module_name(plan.entry_point),
            user_args=tuple(args),
            hyperparameters=dict(hyperparameters),
        )
    origin = plan.mapped_by.origin
    fetch_code(plan.source, code_dir, f"the image's source_dir {plan.source!r} ({origin})")
    entry = _entry_in(
        code_dir,
        plan.entry_point,
        f"ClientError: the image's entry_point {plan.entry_point!r} is not a file in its "
        f"source_dir {plan.source!r} ({origin})",
    )
    _mention_requirements(code_dir, say)
    args = toolkit_args(hyperparameters)
    return Program(
        argv=_command(script_command(entry), entry, args, plan.ranks, stop_grace),
        entry_point=plan.entry_point,
        module_dir=str(code_dir),
        module_name=module_name(plan.entry_point),
        user_args=tuple(args),
        hyperparameters=decoded_hyperparameters(hyperparameters),
        log_level=toolkit_log_level(hyperparameters),
        python_path=(str(code_dir),),
    )


def _sdk_script(
    plan: SdkScriptRun,
    hyperparameters: Mapping[str, str],
    code_dir: Path,
    say: Callable[[str], None],
    stop_grace: float,
) -> Program:
    fetch_code(plan.submit_directory, code_dir, f"{SDK_SUBMIT_DIRECTORY} {plan.submit_directory!r}")
    entry = _entry_in(
        code_dir,
        plan.program,
        f"ClientError: sagemaker_program {plan.program!r} is not in the source from "
        f"{plan.submit_directory!r}",
    )
    _mention_requirements(code_dir, say)
    args = toolkit_args(hyperparameters)
    return Program(
        argv=_command(script_command(entry), entry, args, plan.ranks, stop_grace),
        entry_point=plan.program,
        module_dir=plan.submit_directory,
        module_name=module_name(plan.program),
        user_args=tuple(args),
        hyperparameters=decoded_hyperparameters(hyperparameters),
        log_level=toolkit_log_level(hyperparameters),
        python_path=(str(code_dir),),
    )


def torchrun_command(
    ranks: int,
    script: Path,
    args: Sequence[str],
    shutdown_timeout: float,
    rendezvous: Rendezvous | None = None,
) -> tuple[str, ...]:
    """``script`` as ``ranks`` data-parallel processes on this instance under torchrun.

    ``--standalone`` gives the group a rendezvous on a free local port, so jobs on one
    machine never collide on a fixed one. No ``--max-restarts``: a failed rank ends the
    attempt. torchrun forwards the agent's SIGTERM to the ranks and by default SIGKILLs
    them 30 s later; ``--shutdown-timeout`` (the attempt's stop grace) gives them as long
    to save as the agent itself allows before its SIGKILL. Each rank starts
    through ``spotrun.toolkit.rank``, which ties it to torchrun's life (torchrun puts ranks in
    sessions of their own, out of reach of the agent's group signals) and records a rank's
    error as the job's failure reason.

    With a ``rendezvous`` (several instances) torchrun's static rendezvous joins the hosts:
    node 0's torchrun serves the group's store at the leader's address, the others connect
    to it, and a rank's global number is ``node_rank × ranks + local rank``.
    """
    meet: tuple[str, ...] = ("--standalone",)
    if rendezvous is not None:
        meet = tuple(_meeting(rendezvous))
    return (
        sys.executable,
        "-m",
        "torch.distributed.run",
        *meet,
        f"--nproc_per_node={ranks}",
        f"--shutdown-timeout={max(1, math.ceil(shutdown_timeout))}",
        "-m",
        RANK_MODULE,
        str(script),
        *args,
    )


def with_container_overrides(
    program: Program,
    entrypoint: Sequence[str] | None,
    arguments: Sequence[str] | None,
    code_dir: Path,
) -> Program:
    """SageMaker's ``ContainerEntrypoint`` and ``ContainerArguments`` applied to the program
    the job's image (or script, or built-in) maps to.

    The entrypoint replaces the whole command and is run in the code folder; it gets the
    arguments, or none (a container started with another entrypoint loses its image's
    default command too). Arguments alone replace what the program would be given (its
    hyperparameter arguments). ``JobInputError`` when the entrypoint names no program found
    in the code folder or on the PATH.
    """
    if entrypoint is None and arguments is None:
        return program
    args = tuple(arguments or ())
    if entrypoint is not None:
        first = entrypoint[0]
        found = shutil.which(first) or (code_dir / first).is_file()
        if not first or not found:
            raise JobInputError(
                f"ClientError: ContainerEntrypoint {first!r} is neither a file in the code "
                "folder nor a program on the PATH"
            )
        return replace(program, argv=(*entrypoint, *args), user_args=args)
    base = program.argv
    given = program.user_args
    if given and base[len(base) - len(given) :] == given:
        base = base[: len(base) - len(given)]
    return replace(program, argv=(*base, *args), user_args=args)


def joined(program: Program, rendezvous: Rendezvous) -> Program:
    """``program`` with its torchrun joining the hosts at ``rendezvous`` instead of a
    rendezvous of its own (``--standalone``); a program without torchrun as it is."""
    argv = list(program.argv)
    if argv[1:3] != ["-m", "torch.distributed.run"] or "--standalone" not in argv:
        return program
    at = argv.index("--standalone")
    argv[at : at + 1] = _meeting(rendezvous)
    return replace(program, argv=tuple(argv))


def _meeting(rendezvous: Rendezvous) -> list[str]:
    return [
        f"--nnodes={rendezvous.nodes}",
        f"--node_rank={rendezvous.node_rank}",
        f"--master_addr={rendezvous.master_addr}",
        f"--master_port={rendezvous.master_port}",
    ]


def _command(
    alone: Sequence[str], entry: Path, args: Sequence[str], ranks: int | None, grace: float
) -> tuple[str, ...]:
    """The script's command line: ``alone`` + args, or torchrun's with ranks (the plan
    allows ranks for Python scripts only)."""
    if ranks is None:
        return (*alone, *args)
    return torchrun_command(ranks, entry, args, grace)


def _mention_requirements(code_dir: Path, say: Callable[[str], None]) -> None:
    if (code_dir / REQUIREMENTS).is_file():
        # the toolkit would pip-install it; spotrun runs with the server's environment
        say(
            f"spotrun-agent: {REQUIREMENTS} found in the code; spotrun installs no packages, "
            "the training runs with the Python environment spotrun runs in"
        )


def python_path(program: Program, inherited: str | None) -> str | None:
    """PYTHONPATH for the training process: the program's folders, then what it inherits."""
    parts = [*program.python_path, *(inherited.split(os.pathsep) if inherited else [])]
    return os.pathsep.join(p for p in parts if p) or None
