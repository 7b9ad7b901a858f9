"""A run plan as JSON: decided once at admission, stored with the job, executed by agents.

An agent may run on a machine with no spotrun home and so no image registry; and a
registry edited after admission must not change what an admitted job runs. So admission's
``plan_run`` result is stored as this JSON and the agent rebuilds the very same plan from
it (``plan_from_json(plan_to_json(p)) == p``). Pure: no I/O.

The shape (``version`` 1)::

    {"version": 1, "kind": "script", "source": …, "entry_point": …, "toolkit_args": …,
     "ranks": N | null, "mapped_by": ENTRY | null}
    {"version": 1, "kind": "sdk-script", "program": …, "submit_directory": …,
     "ranks": N | null, "mapped_by": ENTRY | null}
    {"version": 1, "kind": "algorithm", "algorithm": {"name", "module",
     "supports_checkpoints", "summary"}, "mapped_by": ENTRY | null}

    ENTRY = {"pattern": …, "origin": …, "target": {"kind": "script", "source_dir",
             "entry_point"} | {"kind": "script-mode", "algorithm"} |
             {"kind": "algorithm", "name", "aws_image"}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spotrun.errors import SpecError
from spotrun.images._algorithms import BuiltinAlgorithm
from spotrun.images._plan import AlgorithmRun, RunPlan, ScriptRun, SdkScriptRun
from spotrun.images._registry import AlgorithmRef, BakedScript, ImageEntry, ImageTarget, ScriptMode

PLAN_VERSION = 1
_FIELD = "RunPlan"


def plan_to_json(plan: RunPlan) -> dict[str, Any]:
    """The plan as plain JSON data."""
    out: dict[str, Any] = {"version": PLAN_VERSION}
    if isinstance(plan, ScriptRun):
        out.update(
            kind="script",
            source=plan.source,
            entry_point=plan.entry_point,
            toolkit_args=plan.toolkit_args,
            ranks=plan.ranks,
        )
    elif isinstance(plan, SdkScriptRun):
        out.update(
            kind="sdk-script",
            program=plan.program,
            submit_directory=plan.submit_directory,
            ranks=plan.ranks,
        )
    else:
        a = plan.algorithm
        out.update(
            kind="algorithm",
            algorithm={
                "name": a.name,
                "module": a.module,
                "supports_checkpoints": a.supports_checkpoints,
                "summary": a.summary,
            },
        )
    out["mapped_by"] = None if plan.mapped_by is None else _entry_to_json(plan.mapped_by)
    return out


def plan_from_json(data: Mapping[str, Any]) -> RunPlan:
    """The plan ``plan_to_json`` wrote; ``SpecError`` (field ``RunPlan``) if it is not one."""
    if not isinstance(data, Mapping):
        raise SpecError(_FIELD, f"must be an object, got {type(data).__name__}")
    if data.get("version") != PLAN_VERSION:
        raise SpecError(
            _FIELD,
            f"version {data.get('version')!r} is not one this spotrun reads ({PLAN_VERSION})",
        )
    raw_entry = data.get("mapped_by")
    entry = None if raw_entry is None else _entry_from_json(raw_entry)
    kind = data.get("kind")
    if kind == "script":
        return ScriptRun(
            _str(data, "source"),
            _str(data, "entry_point"),
            toolkit_args=_bool(data, "toolkit_args"),
            mapped_by=entry,
            ranks=_ranks(data),
        )
    if kind == "sdk-script":
        return SdkScriptRun(
            _str(data, "program"), _str(data, "submit_directory"), entry, _ranks(data)
        )
    if kind == "algorithm":
        a = data.get("algorithm")
        if not isinstance(a, Mapping):
            raise SpecError(f"{_FIELD}.algorithm", "must be an object")
        algorithm = BuiltinAlgorithm(
            _str(a, "name", "algorithm."),
            _str(a, "module", "algorithm."),
            _bool(a, "supports_checkpoints", "algorithm."),
            _str(a, "summary", "algorithm.", empty=True),
        )
        return AlgorithmRun(algorithm, entry)
    raise SpecError(f"{_FIELD}.kind", f"{kind!r} is not script, sdk-script or algorithm")


def _entry_to_json(e: ImageEntry) -> dict[str, Any]:
    t = e.target
    target: dict[str, Any]
    if isinstance(t, BakedScript):
        target = {"kind": "script", "source_dir": t.source_dir, "entry_point": t.entry_point}
    elif isinstance(t, ScriptMode):
        target = {"kind": "script-mode", "algorithm": t.algorithm}
    else:
        target = {"kind": "algorithm", "name": t.name, "aws_image": t.aws_image}
    return {"pattern": e.pattern, "origin": e.origin, "target": target}


def _entry_from_json(data: Any) -> ImageEntry:
    if not isinstance(data, Mapping) or not isinstance(data.get("target"), Mapping):
        raise SpecError(f"{_FIELD}.mapped_by", "must be an object with a target")
    t = data["target"]
    p = "mapped_by.target."
    target: ImageTarget
    if t.get("kind") == "script":
        target = BakedScript(_str(t, "source_dir", p), _str(t, "entry_point", p))
    elif t.get("kind") == "script-mode":
        algorithm = t.get("algorithm")
        if algorithm is not None and not isinstance(algorithm, str):
            raise SpecError(f"{_FIELD}.{p}algorithm", "must be a string or null")
        target = ScriptMode(algorithm)
    elif t.get("kind") == "algorithm":
        target = AlgorithmRef(_str(t, "name", p), _bool(t, "aws_image", p))
    else:
        raise SpecError(f"{_FIELD}.{p}kind", f"{t.get('kind')!r} is not a kind of mapping")
    return ImageEntry(
        _str(data, "pattern", "mapped_by."), target, _str(data, "origin", "mapped_by.")
    )


def _str(data: Mapping[str, Any], name: str, prefix: str = "", empty: bool = False) -> str:
    value = data.get(name)
    if not isinstance(value, str) or (not value and not empty):
        raise SpecError(f"{_FIELD}.{prefix}{name}", f"must be a non-empty string, got {value!r}")
    return value


def _bool(data: Mapping[str, Any], name: str, prefix: str = "") -> bool:
    value = data.get(name)
    if not isinstance(value, bool):
        raise SpecError(f"{_FIELD}.{prefix}{name}", f"must be true or false, got {value!r}")
    return value


def _ranks(data: Mapping[str, Any]) -> int | None:
    value = data.get("ranks")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(
            f"{_FIELD}.ranks", f"must be a positive whole number or null, got {value!r}"
        )
    return value
