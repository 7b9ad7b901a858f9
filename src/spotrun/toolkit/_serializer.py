"""How a state mapping becomes ``state.bin`` and back: torch.save or pickle, or your own.

Checkpoints are trusted input (the job's own output), but the torch serializer still loads
with ``weights_only=True`` by default, which the states from ``spotrun.toolkit.torch``
satisfy; pickle can run code on load, so only load checkpoints you wrote.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Serializer(Protocol):
    """Writes a state to one file and reads it back; ``name`` is recorded in the manifest."""

    name: str

    def dump(self, state: Mapping[str, Any], path: Path) -> None: ...

    def load(self, path: Path) -> Any: ...


class PickleSerializer:
    """The standard library's pickle (highest protocol): no dependency at all."""

    name = "pickle"

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        with path.open("wb") as f:
            pickle.dump(dict(state), f, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, path: Path) -> Any:
        with path.open("rb") as f:
            return pickle.load(f)


class TorchSerializer:
    """``torch.save``/``torch.load``; torch is imported only when this is used."""

    name = "torch"

    def __init__(self, weights_only: bool = True) -> None:
        self.weights_only = weights_only

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        import torch

        torch.save(dict(state), path)

    def load(self, path: Path) -> Any:
        import torch

        return torch.load(path, map_location="cpu", weights_only=self.weights_only)


BUILTIN: dict[str, Serializer] = {"pickle": PickleSerializer(), "torch": TorchSerializer()}


def choose(state: Mapping[str, Any]) -> Serializer:
    """torch when the state holds tensors, pickle otherwise."""
    return BUILTIN["torch"] if holds_tensors(state) else BUILTIN["pickle"]


def holds_tensors(value: object) -> bool:
    # a state holding tensors was built by code that imported torch already, so looking at
    # sys.modules never imports torch for a script that does not use it
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    tensor = torch.Tensor
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, tensor):
            return True
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
