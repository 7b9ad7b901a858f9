"""A private in-memory copy of a training state, so it can be written while training goes on.

Neither torch nor numpy is imported here: a value can only be a tensor or an ndarray if the
caller's code imported them already, so looking them up in ``sys.modules`` is enough.
"""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict
from typing import Any


def snapshot(state: Any, reuse: Any = None) -> Any:
    """A deep copy of ``state`` that later training steps cannot change.

    ``reuse`` is an earlier snapshot nobody reads any more: its CPU tensors are overwritten
    in place when shape and dtype match, which is several times faster than allocating
    (and page-faulting) fresh memory for every save.

    Tensors are detached and copied to CPU memory (so the copy neither holds GPU memory nor
    races with the next step's in-place updates), ndarrays are copied, dicts, lists and
    tuples are rebuilt (an ``OrderedDict`` keeps the ``_metadata`` that ``load_state_dict``
    reads), and anything else goes through ``copy.deepcopy``.
    """
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    tensor = torch.Tensor if torch is not None else None
    ndarray = numpy.ndarray if numpy is not None else None
    memo: dict[int, Any] = {}
    pool: dict[tuple[Any, ...], list[Any]] = {}
    if tensor is not None and reuse is not None:
        for old in _tensors(reuse, tensor):
            pool.setdefault(_layout(old), []).append(old)

    def walk(value: Any) -> Any:
        if tensor is not None and isinstance(value, tensor):
            spare = pool.get(_layout(value)) if value.is_contiguous() else None
            if spare:
                return spare.pop().copy_(value.detach())
            # copy=True: a CPU tensor would otherwise come back as the very same storage
            return value.detach().to("cpu", copy=True)
        if ndarray is not None and isinstance(value, ndarray):
            return value.copy()
        if isinstance(value, OrderedDict):
            copied = OrderedDict((k, walk(v)) for k, v in value.items())
            if hasattr(value, "_metadata"):
                copied._metadata = copy.deepcopy(value._metadata)  # type: ignore[attr-defined]
            return copied
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return tuple(walk(v) for v in value)
        if isinstance(value, str | bytes | int | float | bool | type(None)):
            return value  # immutable: nothing to copy
        # the memo keeps objects shared between opaque values shared in the copy too
        return copy.deepcopy(value, memo)

    return walk(state)


def _layout(t: Any) -> tuple[Any, ...]:
    return (tuple(t.shape), t.dtype)


def _tensors(value: Any, tensor: Any) -> list[Any]:
    """The contiguous CPU tensors inside an earlier snapshot."""
    found: list[Any] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tensor):
            if item.device.type == "cpu" and item.is_contiguous() and not item.requires_grad:
                found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found
