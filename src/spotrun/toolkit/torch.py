"""PyTorch: everything a resume needs to continue exactly where the run stopped.

``capture`` snapshots the model, optimizer, LR scheduler and grad scaler state dicts, every
random number generator a training step may draw from (python ``random``, numpy's global
generator when numpy is importable, torch's CPU generator, and the CUDA generators when
CUDA is available), and the data position the caller passes (epoch, batch index, sampler
seed, ...). ``restore`` puts all of it back and returns the position. A run that restores
and continues then ends with the same tensors as one that never stopped.

The snapshot is a copy (tensors are cloned), so training may continue while it is being
written. Every value is a tensor or a plain Python value, so ``torch.load`` with
``weights_only=True`` reads it back.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

FORMAT_VERSION = 1


def capture(
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    position: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """A self-contained copy of the training state, ready for ``Checkpointer.save``."""
    state: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": model.state_dict(),
        "rng": rng_states(),
        "position": dict(position or {}),
    }
    for name, owner in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if owner is not None:
            state[name] = owner.state_dict()
    # state_dict() hands out the live tensors; training on would change the snapshot
    snapshot = _clone(state)
    assert isinstance(snapshot, dict)
    return snapshot


def restore(
    state: Mapping[str, Any],
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> dict[str, int]:
    """Load ``state`` (from ``capture``) into the given objects; return the data position.

    Every object given must have been captured, so a resume never silently starts an
    optimizer or scheduler from scratch.
    """
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"not a spotrun torch state (format {state.get('format')!r})")
    model.load_state_dict(state["model"])
    for name, owner in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if owner is None:
            continue
        if name not in state:
            raise ValueError(f"the checkpoint holds no {name} state to restore")
        # a copy: optimizers keep the tensors they are given (momentum, Adam's moments),
        # and tensors loaded by mapping the checkpoint file would keep that file alive on
        # disk, after retention deleted it, for as long as training runs
        owner.load_state_dict(_clone(state[name]))
    # RNG last: loading state dicts must not be able to disturb the restored generators
    set_rng_states(state["rng"])
    return {str(k): int(v) for k, v in state["position"].items()}


def rng_states() -> dict[str, Any]:
    """Every random generator a step may draw from: python, numpy's global one, torch's CPU
    one and the CUDA ones (when CUDA is available), as plain values ``weights_only`` loads."""
    import torch

    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_state = _numpy_state()
    if np_state is not None:
        states["numpy"] = np_state
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Put back generators saved by ``rng_states``."""
    import torch

    version, internal, gauss = states["python"]
    # a list after a round trip through some serializers; random.setstate wants a tuple
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        _set_numpy_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        cuda = list(states["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _numpy_state() -> dict[str, Any] | None:
    try:
        import numpy as np
    except ImportError:
        return None
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    # plain ints instead of an ndarray, so that torch.load(weights_only=True) accepts it
    return {
        "kind": str(kind),
        "keys": [int(k) for k in keys],
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    try:
        import numpy as np
    except ImportError:
        return
    keys = np.asarray(state["keys"], dtype=np.uint32)
    np.random.set_state(
        (state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


def _clone(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, OrderedDict):
        # model state dicts carry per-module versions in _metadata; load_state_dict reads it
        copied = OrderedDict((k, _clone(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            copied._metadata = value._metadata  # type: ignore[attr-defined]
        return copied
    if isinstance(value, Mapping):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    return value
