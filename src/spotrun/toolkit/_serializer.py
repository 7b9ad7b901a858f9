"""How a state mapping becomes ``state.bin`` and back: torch.save or pickle, or your own.

Checkpoints are trusted input (the job's own output), but the torch serializer still loads
with ``weights_only=True`` by default, which the states from ``spotrun.toolkit.torch``
satisfy; pickle can run code on load, so only load checkpoints you wrote.

The torch serializer maps the file instead of reading it (``torch.load(mmap=True)``): a
restore then copies each tensor once, from the page cache straight into the model, instead
of first into fresh memory and then into the model. That makes a resume about twice as fast
and keeps a second copy of a large state out of RAM.
"""

from __future__ import annotations

import mmap
import pickle
import sys
import zipfile
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

    def __init__(self, weights_only: bool = True, mmap: bool = True) -> None:
        self.weights_only = weights_only
        #: map the file rather than read it; see ``load``
        self.mmap = mmap

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        import torch

        torch.save(dict(state), path)

    def load(self, path: Path) -> Any:
        """The state in ``path``, its tensors on the CPU.

        With ``mmap`` (the default) the tensors are private, copy-on-write maps of the file:
        their bytes are read when first touched (``load_state_dict`` copies them into the
        model), changing them never writes to the file, and deleting the checkpoint
        afterwards (retention does) leaves them intact. Nothing in spotrun rewrites a
        committed checkpoint in place; a tool that did would change untouched pages of a
        mapped tensor too, which is why ``spotrun.toolkit.torch.restore`` copies the
        optimizer state it keeps. The file is read as usual where it cannot be mapped:
        torch's old, non-zip format, a filesystem without mmap, a platform without private
        maps, or a program that made shared maps torch's default.
        """
        import torch

        if self.mmap and _can_map(torch) and zipfile.is_zipfile(path):
            try:
                return torch.load(
                    path, map_location="cpu", weights_only=self.weights_only, mmap=True
                )
            except (RuntimeError, OSError):
                pass  # e.g. a network or FUSE mount that cannot map files
        return torch.load(path, map_location="cpu", weights_only=self.weights_only)


def _can_map(torch: Any) -> bool:
    """Whether torch's mapped load would give private (copy-on-write) maps here.

    The default is read, not set: setting it is process-wide and would race with loads in
    other threads, and a shared map would let a write to a restored tensor reach the file.
    """
    private = getattr(mmap, "MAP_PRIVATE", None)  # absent on Windows
    return private is not None and torch.serialization.get_default_mmap_options() == private


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
