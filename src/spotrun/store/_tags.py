"""Tags by resource ARN (training and tuning jobs), as AddTags, ListTags and DeleteTags see
them. A job's creation writes its request's tags here in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from spotrun.store.models import TagRow

#: AWS's limit on the tags of one resource
MAX_TAGS = 50


class TooManyTags(Exception):
    """Adding the tags would leave the resource with more than ``MAX_TAGS``."""


class _HasTx(Protocol):
    def _tx(self) -> AbstractContextManager[Session]: ...
    def _read(self) -> AbstractContextManager[Session]: ...


def request_tags(request: Mapping[str, object]) -> list[tuple[str, str]]:
    """The tags of a create request, one per key (a repeated key keeps its last value)."""
    out: dict[str, str] = {}
    for t in request.get("Tags") or []:  # type: ignore[attr-defined]
        if isinstance(t, Mapping) and isinstance(t.get("Key"), str):
            out[str(t["Key"])] = str(t.get("Value", ""))
    return list(out.items())


def insert_tags(s: Session, arn: str, tags: Sequence[tuple[str, str]]) -> None:
    """Write a new resource's tags (within the creating transaction)."""
    for i, (k, v) in enumerate(tags):
        s.add(TagRow(resource_arn=arn, key=k, value=v, position=i))


class TagStore:
    """Mixed into ``Store``."""

    def tags(self: _HasTx, arn: str) -> list[tuple[str, str]]:
        """A resource's tags in the order they were first given."""
        with self._read() as s:
            q = select(TagRow).where(TagRow.resource_arn == arn).order_by(TagRow.position)
            return [(r.key, r.value) for r in s.scalars(q)]

    def add_tags(self: _HasTx, arn: str, tags: Sequence[tuple[str, str]]) -> None:
        """Add or overwrite tags; ``TooManyTags`` (nothing written) past ``MAX_TAGS``."""
        with self._tx() as s:
            rows = {r.key: r for r in s.scalars(select(TagRow).where(TagRow.resource_arn == arn))}
            new = {k for k, _ in tags if k not in rows}
            if len(rows) + len(new) > MAX_TAGS:
                raise TooManyTags(
                    f"the resource has {len(rows)} tags and {len(new)} new keys were given; "
                    f"a resource may have at most {MAX_TAGS}"
                )
            top = s.scalar(select(func.max(TagRow.position)).where(TagRow.resource_arn == arn))
            pos = -1 if top is None else top
            for k, v in tags:
                if k in rows:
                    rows[k].value = v
                else:
                    pos += 1
                    row = TagRow(resource_arn=arn, key=k, value=v, position=pos)
                    s.add(row)
                    rows[k] = row

    def delete_tags(self: _HasTx, arn: str, keys: Sequence[str]) -> None:
        """Remove the named keys; keys the resource does not have are ignored, as AWS does."""
        with self._tx() as s:
            s.execute(delete(TagRow).where(TagRow.resource_arn == arn, TagRow.key.in_(keys)))
