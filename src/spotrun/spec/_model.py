"""AWS's own SageMaker shapes, as data, and one generic checker that walks them.

``data/sagemaker-shapes.json`` is cut from botocore's service model by
``scripts/sagemaker_model.py``: every shape reachable from the training and tuning
operations spotrun serves, with its type, members, required members, limits, pattern and
enum. spotrun reads that copy (never botocore, which a user of the wheel need not have).

``check`` holds a value against a shape and raises ``SpecError`` at the first violation,
naming the field by its dotted path (``InputDataConfig[1].DataSource.S3DataSource.S3Uri``,
``.key`` for a map entry). Unknown members are refused at every depth, naming the known
ones. Where spotrun departs from the model on purpose (members of its own, fields it
checks with its own rule, members it can default), the caller says so with ``Leniency``.

botocore writes its patterns for Java, matched against the whole value; ``_patterns``
translates them for Python's ``re``. Patterns that cannot be translated are skipped;
``untranslatable`` lists them.

Pure: the only input read is the package's own data file.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec._patterns import compiled, translate

__all__ = [
    "STRICT",
    "Leniency",
    "Model",
    "Shape",
    "check",
    "check_operation",
    "compiled",
    "kind",
    "member_paths",
    "members",
    "model",
    "occurrences",
    "operation_shapes",
    "shape",
    "show",
    "translate",
    "untranslatable",
]

SHAPES_FILE = "sagemaker-shapes.json"
#: enums longer than this are shown in part in messages (the instance types number 225)
_ENUM_SHOWN = 12


@dataclass(frozen=True)
class Shape:
    """One shape of the model: a type and the limits botocore records for it."""

    name: str
    type: str
    #: structure members: member name -> shape name
    members: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    #: the shape of a list's items, and of a map's keys and values
    member: str | None = None
    key: str | None = None
    value: str | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """The shipped shapes and the botocore release they were taken from."""

    botocore_version: str
    api_version: str
    #: operation name -> (input shape, output shape); either may be absent
    operations: Mapping[str, tuple[str | None, str | None]]
    shapes: Mapping[str, Shape]


@dataclass(frozen=True)
class Leniency:
    """Where a caller departs from the model on purpose; the default departs nowhere."""

    #: shape name -> members accepted beyond the model (the caller checks their values)
    extra_members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: shape name -> required members that may be absent (the caller fills a default)
    optional: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: shapes whose pattern is not applied (the caller checks them with its own rule)
    unpatterned: frozenset[str] = frozenset()


STRICT = Leniency()


@functools.cache
def model() -> Model:
    """The shapes shipped in the package, read once."""
    text = (
        importlib.resources.files("spotrun.spec")
        .joinpath("data", SHAPES_FILE)
        .read_text(encoding="utf-8")
    )
    doc = json.loads(text)
    shapes = {name: _shape(name, raw) for name, raw in doc["shapes"].items()}
    ops = {op: (io.get("input"), io.get("output")) for op, io in doc["operations"].items()}
    return Model(doc["botocoreVersion"], doc["apiVersion"], ops, shapes)


def _shape(name: str, raw: Mapping[str, Any]) -> Shape:
    return Shape(
        name=name,
        type=raw["type"],
        members=dict(raw.get("members", {})),
        required=tuple(raw.get("required", ())),
        member=raw.get("member"),
        key=raw.get("key"),
        value=raw.get("value"),
        min=raw.get("min"),
        max=raw.get("max"),
        pattern=raw.get("pattern"),
        enum=tuple(raw.get("enum", ())),
    )


def shape(name: str) -> Shape:
    """The shape called ``name``; ``KeyError`` when the shipped model lacks it."""
    return model().shapes[name]


def members(shape_name: str) -> dict[str, Shape]:
    """A structure's members and their shapes, in the model's order (for walking outputs)."""
    return {m: shape(s) for m, s in shape(shape_name).members.items()}


def operation_shapes(op_name: str) -> tuple[str | None, str | None]:
    """The input and output shape names of an operation."""
    return model().operations[op_name]


def untranslatable() -> list[str]:
    """The shipped patterns spotrun cannot check (and so skips)."""
    pats = {s.pattern for s in model().shapes.values() if s.pattern is not None}
    return sorted(p for p in pats if compiled(p) is None)


# -- messages -------------------------------------------------------------------------------


def kind(v: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    return type(v).__name__


def show(v: str, limit: int = 60) -> str:
    """A value for a message, shortened when long."""
    return repr(v) if len(v) <= limit else repr(v[:limit]) + "…"


def _allowed(values: tuple[str, ...]) -> str:
    if len(values) <= _ENUM_SHOWN:
        return ", ".join(values)
    return f"{', '.join(values[:_ENUM_SHOWN])}, … ({len(values)} in all)"


#: what a pattern (or a long enum) means, in words, for the shapes users meet most
HINTS: Mapping[str, str] = {
    "TrainingJobName": (
        "use 1-63 letters, digits and hyphens, starting and ending with a letter or digit"
    ),
    "RoleArn": "expected an IAM role ARN, arn:aws:iam::<account>:role/<name>",
    "ChannelName": "use letters, digits, '.', '-' and '_' only (no '/')",
    "TrainingEnvironmentKey": "keys are [a-zA-Z_][a-zA-Z0-9_]*",
    "ArnOrName": "expected an algorithm name (letters, digits and hyphens, at most 63) or its ARN",
    "KmsKeyId": "a KMS key id, alias or ARN ([a-zA-Z0-9:/_-]*)",
    "TagKey": "use letters, digits, spaces and _ . : / = + - @",
    "TagValue": "use letters, digits, spaces and _ . : / = + - @",
    "SecurityGroupId": "use letters, digits and hyphens",
    "SubnetId": "use letters, digits and hyphens",
    "S3Uri": "expected s3://<bucket>/<key prefix> or https://…",
    # enums too long to list in a message
    "TrainingInstanceType": (
        "expected a SageMaker training instance type, ml.<family>.<size> such as ml.g4dn.xlarge"
    ),
    "ProcessingInstanceType": (
        "expected a SageMaker processing instance type, ml.<family>.<size> such as ml.m5.xlarge"
    ),
}


def _at(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _owner(s: Shape) -> str:
    """How a structure is named in an unknown-member message."""
    # an operation's input reads as the operation: "not a CreateTrainingJob member"
    for suffix in ("Request", "Input"):
        if s.name.endswith(suffix) and s.name != suffix:
            return s.name.removesuffix(suffix)
    return s.name


# -- the checker ----------------------------------------------------------------------------


def check(shape_name: str, value: Any, path: str = "", lenient: Leniency = STRICT) -> None:
    """Hold ``value`` against the shape ``shape_name``; raises ``SpecError`` at ``path``
    (dotted, ``[i]`` for list items, ``.key`` for map entries) for the first violation."""
    _check(shape(shape_name), value, path, lenient)


def check_operation(op_name: str, params: Any, lenient: Leniency = STRICT) -> None:
    """Hold an operation's input against its shape (the members named from the top)."""
    input_shape, _ = operation_shapes(op_name)
    if input_shape is None:
        if params:
            raise SpecError("request", f"{op_name} takes no members")
        return
    check(input_shape, params, "", lenient)


def _check(s: Shape, v: Any, path: str, lenient: Leniency) -> None:
    where = path or "request"
    t = s.type
    if t == "structure":
        _structure(s, v, path, lenient)
    elif t == "list":
        if not isinstance(v, list | tuple):
            raise SpecError(where, f"must be a list, got {kind(v)}")
        _count(len(v), s, where)
        assert s.member is not None
        item = shape(s.member)
        for i, x in enumerate(v):
            _check(item, x, f"{where}[{i}]", lenient)
    elif t == "map":
        _map(s, v, where, lenient)
    elif t == "string":
        _string(s, v, where, lenient)
    elif t in ("integer", "long"):
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(where, f"must be an integer, got {kind(v)}")
        _bounds(v, s, where)
    elif t in ("float", "double"):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecError(where, f"must be a number, got {kind(v)}")
        _bounds(v, s, where)
    elif t == "boolean":
        if not isinstance(v, bool):
            raise SpecError(where, f"must be true or false, got {kind(v)}")
    # botocore sends epoch seconds; ISO 8601 text is what a non-botocore client may send
    elif t == "timestamp" and (isinstance(v, bool) or not isinstance(v, int | float | str)):
        raise SpecError(where, f"must be a time (epoch seconds or ISO 8601), got {kind(v)}")
    # blobs and anything newer are taken as given


def _structure(s: Shape, v: Any, path: str, lenient: Leniency) -> None:
    where = path or "request"
    if not isinstance(v, Mapping):
        raise SpecError(where, f"must be an object, got {kind(v)}")
    extra = lenient.extra_members.get(s.name, frozenset())
    for k in v:
        if not isinstance(k, str):
            raise SpecError(where, f"member names must be strings, got {k!r}")
        if k not in s.members and k not in extra:
            known = ", ".join([*s.members, *sorted(extra)])
            raise SpecError(_at(path, k), f"is not a {_owner(s)} member; known: {known}")
    may_lack = lenient.optional.get(s.name, frozenset())
    for k in s.required:
        if k not in v and k not in may_lack:
            raise SpecError(_at(path, k), "is required")
    for k, member_shape in s.members.items():
        if k in v:
            _check(shape(member_shape), v[k], _at(path, k), lenient)


def _map(s: Shape, v: Any, where: str, lenient: Leniency) -> None:
    if not isinstance(v, Mapping):
        raise SpecError(where, f"must be an object, got {kind(v)}")
    _count(len(v), s, where)
    assert s.key is not None and s.value is not None
    ks, vs = shape(s.key), shape(s.value)
    for k, x in v.items():
        if not isinstance(k, str):
            raise SpecError(where, f"keys must be strings, got {kind(k)}")
        lo, hi = ks.min, ks.max
        if (lo is not None and len(k) < lo) or (hi is not None and len(k) > hi):
            span = f"{int(lo or 0)} to {int(hi)}" if hi is not None else f"at least {int(lo or 0)}"
            raise SpecError(where, f"key {show(k)} is {len(k)} characters long; keys are {span}")
        if ks.enum and k not in ks.enum:
            raise SpecError(f"{where}.{k}", f"is not an allowed key; use {_allowed(ks.enum)}")
        _matches(ks, k, f"{where}.{k}", lenient, what=" as a key")
        _check(vs, x, f"{where}.{k}", lenient)


def _string(s: Shape, v: Any, where: str, lenient: Leniency) -> None:
    if s.enum:
        if not isinstance(v, str):
            raise SpecError(
                where, f"must be a string, got {kind(v)}; allowed values are {_allowed(s.enum)}"
            )
        if v not in s.enum:
            if s.name in HINTS:
                raise SpecError(
                    where, f"is {show(v)}; {HINTS[s.name]} ({len(s.enum)} allowed values)"
                )
            raise SpecError(where, f"is {show(v)}; allowed values are {_allowed(s.enum)}")
        return
    if not isinstance(v, str):
        raise SpecError(where, f"must be a string, got {kind(v)}")
    if s.min is not None and len(v) < s.min:
        lo = int(s.min)
        need = "is" if lo == 1 else "are"
        raise SpecError(where, f"is {len(v)} characters long; at least {lo} {need} needed")
    if s.max is not None and len(v) > s.max:
        raise SpecError(where, f"is {len(v)} characters long; at most {int(s.max)} are allowed")
    _matches(s, v, where, lenient)


def _matches(s: Shape, v: str, where: str, lenient: Leniency, what: str = "") -> None:
    if s.pattern is None or s.name in lenient.unpatterned:
        return
    rx = compiled(s.pattern)
    if rx is not None and rx.fullmatch(v) is None:
        hint = HINTS.get(s.name, f"it must match {s.pattern}")
        raise SpecError(where, f"{show(v)} is not allowed{what}: {hint}")


def _count(n: int, s: Shape, where: str) -> None:
    if s.min is not None and n < s.min:
        lo = int(s.min)
        raise SpecError(
            where, f"has {n} entries; at least {lo} {'is' if lo == 1 else 'are'} needed"
        )
    if s.max is not None and n > s.max:
        raise SpecError(where, f"has {n} entries; at most {int(s.max)} are allowed")


def _bounds(v: float, s: Shape, where: str) -> None:
    if s.min is not None and v < s.min:
        raise SpecError(where, f"is {v}; it must be at least {_num(s.min)}")
    if s.max is not None and v > s.max:
        raise SpecError(where, f"is {v}; it must be at most {_num(s.max)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# -- walking values -------------------------------------------------------------------------


def occurrences(
    shape_name: str, value: Any, target: str, path: str = ""
) -> Iterator[tuple[str, Any]]:
    """Each ``(path, value)`` in ``value`` (already checked against ``shape_name``) whose
    shape is ``target``: how a caller applies its own rule to, say, every ``S3Uri``."""
    s = shape(shape_name)
    if s.name == target:
        yield path, value
        return
    if s.type == "structure" and isinstance(value, Mapping):
        for k, member_shape in s.members.items():
            if k in value:
                yield from occurrences(member_shape, value[k], target, _at(path, k))
    elif s.type == "list" and isinstance(value, list | tuple) and s.member is not None:
        for i, x in enumerate(value):
            yield from occurrences(s.member, x, target, f"{path}[{i}]")
    elif s.type == "map" and isinstance(value, Mapping) and s.value is not None:
        for k, x in value.items():
            yield from occurrences(s.value, x, target, f"{path}.{k}")


def member_paths(shape_name: str, stop: frozenset[str] = frozenset()) -> list[str]:
    """Every member path under a structure: structures are walked member by member,
    list items as ``[]``, maps and scalars are leaves, and so is any path in ``stop``.
    A shape met again on its own path (a recursive shape) is a leaf too."""
    out: list[str] = []

    def walk(s: Shape, path: str, seen: frozenset[str]) -> None:
        if path and (path in stop or s.type not in ("structure", "list") or s.name in seen):
            out.append(path)
            return
        if s.type == "list":
            assert s.member is not None
            item = shape(s.member)
            if item.type != "structure":
                out.append(path)  # a list of scalars is one field
                return
            walk(item, path + "[]", seen | {s.name})
            return
        for k, member_shape in s.members.items():
            walk(shape(member_shape), _at(path, k), seen | {s.name})

    walk(shape(shape_name), "", frozenset())
    return out
