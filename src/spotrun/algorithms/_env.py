"""What every built-in algorithm needs from its surroundings: hyperparameters, channels,
the model folder, and a way to fail with a reason the job shows.

Paths come from the ``SM_*`` variables the agent sets, falling back to SageMaker's fixed
``/opt/ml`` layout, so an algorithm also runs under the real SageMaker layout or in a test
that only sets a few variables.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from spotrun.toolkit import Checkpointer

ML_ROOT = Path("/opt/ml")
#: hyperparameters the SageMaker SDK and tuner add for themselves; algorithms ignore them
_PRIVATE = frozenset({"_tuning_objective_metric", "default_user_module_name"})

T = TypeVar("T")


class AlgorithmError(Exception):
    """A problem with the job's inputs (hyperparameters, data): the job's failure reason."""


@dataclass(frozen=True)
class AlgorithmEnv:
    """Where an algorithm finds its inputs and puts its outputs."""

    hyperparameters: Mapping[str, str]
    channels: Mapping[str, Path]
    content_types: Mapping[str, str]
    model_dir: Path
    output_dir: Path
    host: str = "algo-1"
    num_cpus: int = 1
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AlgorithmEnv:
        """Read the job's configuration as the agent (or SageMaker) laid it out."""
        env = os.environ if environ is None else environ
        config_dir = Path(env.get("SM_INPUT_CONFIG_DIR", str(ML_ROOT / "input" / "config")))
        hps_file = config_dir / "hyperparameters.json"
        raw: Mapping[str, object]
        if hps_file.is_file():
            raw = json.loads(hps_file.read_text())
        else:
            raw = json.loads(env.get("SM_HPS", "{}"))
        # hyperparameters.json holds strings; SM_HPS holds decoded values: normalise to the
        # strings SageMaker's own algorithms receive
        hps = {
            k: v if isinstance(v, str) else json.dumps(v)
            for k, v in raw.items()
            if not k.startswith("sagemaker_") and k not in _PRIVATE
        }
        data_config_file = config_dir / "inputdataconfig.json"
        data_config: Mapping[str, Mapping[str, str]] = (
            json.loads(data_config_file.read_text()) if data_config_file.is_file() else {}
        )
        data_dir = Path(env.get("SM_INPUT_DIR", str(ML_ROOT / "input"))) / "data"
        channels: dict[str, Path] = {}
        for name in data_config:
            channels[name] = Path(env.get(f"SM_CHANNEL_{name.upper()}", str(data_dir / name)))
        for key, value in env.items():
            # channels named only by a variable (a test, or a hand-made environment)
            if key.startswith("SM_CHANNEL_") and key != "SM_CHANNELS":
                name = key[len("SM_CHANNEL_") :].lower()
                channels.setdefault(name, Path(value))
        types = {
            name: entry["ContentType"]
            for name, entry in data_config.items()
            if entry.get("ContentType")
        }
        return cls(
            hyperparameters=hps,
            channels=channels,
            content_types=types,
            model_dir=Path(env.get("SM_MODEL_DIR", str(ML_ROOT / "model"))),
            output_dir=Path(env.get("SM_OUTPUT_DIR", str(ML_ROOT / "output"))),
            host=env.get("SM_CURRENT_HOST", "algo-1"),
            num_cpus=int(env.get("SM_NUM_CPUS", "") or os.cpu_count() or 1),
        )

    def channel(self, name: str, required: bool = True) -> Path | None:
        """The folder of channel ``name``; ``AlgorithmError`` if required and missing."""
        path = self.channels.get(name)
        if path is None or not path.exists():
            if required:
                raise AlgorithmError(f"the {name!r} channel is required but was not provided")
            return None
        return path

    def content_type(self, name: str) -> str | None:
        """The channel's ContentType without parameters (``text/csv;label_size=1`` ->
        ``text/csv``), lower case; None when the request gave none."""
        value = self.content_types.get(name)
        return value.split(";", 1)[0].strip().lower() if value else None


class Hyperparameters:
    """Typed access to string hyperparameters, remembering which names were read so that
    unknown (misspelt) names can be refused as SageMaker's algorithms do."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self._known: set[str] = set()

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        self._known.add(name)
        if name not in self.values:
            return default
        return self._parse(name, parse)

    def require(self, name: str, parse: Callable[[str], T]) -> T:
        self._known.add(name)
        if name not in self.values:
            raise AlgorithmError(f"the hyperparameter {name!r} is required")
        return self._parse(name, parse)

    def accept(self, names: Iterable[str]) -> None:
        """Names that are valid but read elsewhere (passed through to a library)."""
        self._known.update(names)

    def check_unknown(self) -> None:
        unknown = sorted(
            name
            for name in set(self.values) - self._known
            if not name.startswith("sagemaker_") and name not in _PRIVATE
        )
        if unknown:
            raise AlgorithmError(f"unknown hyperparameters: {', '.join(unknown)}")

    def _parse(self, name: str, parse: Callable[[str], T]) -> T:
        text = self.values[name].strip()
        try:
            return parse(text)
        except (ValueError, TypeError) as e:
            raise AlgorithmError(
                f"the hyperparameter {name}={self.values[name]!r} is not valid: {e}"
            ) from None


def positive(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse``, refusing values that are not > 0."""

    def check(text: str) -> T:
        value = parse(text)
        if not value > 0:  # type: ignore[operator]
            raise ValueError("must be greater than 0")
        return value

    return check


def non_negative(text: str) -> float:
    """A float >= 0."""
    value = float(text)
    if not value >= 0:
        raise ValueError("must not be negative")
    return value


def fraction(text: str) -> float:
    """A float in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and below 1")
    return value


def closed_unit(text: str) -> float:
    """A float in [0, 1]."""
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("must be from 0 to 1")
    return value


def epoch_list(text: str) -> tuple[int, ...]:
    """Increasing epoch numbers such as ``10,20`` (SageMaker's ``lr_scheduler_step``)."""
    steps = tuple(positive(int)(p.strip()) for p in text.split(",") if p.strip())
    if list(steps) != sorted(set(steps)):
        raise ValueError("expected increasing epoch numbers such as 10,20")
    return steps


def data_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` in a stable order, hidden ones left out (the
    same data must give the same model, whatever order the file system lists it in)."""
    if folder.is_file():
        return [folder]
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files)


def read_csv(folder: Path, channel: str) -> npt.NDArray[np.float64]:
    """All csv rows under ``folder`` as one float matrix (no header, comma separated)."""
    blocks = []
    for path in data_files(folder):
        try:
            block = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise AlgorithmError(
                f"{channel} channel: {path.name} is not numeric csv without a header: {e}"
            ) from None
        if block.size:
            blocks.append(block)
    if not blocks:
        raise AlgorithmError(f"the {channel} channel holds no data")
    widths = {b.shape[1] for b in blocks}
    if len(widths) > 1:
        raise AlgorithmError(f"{channel} channel: files have different column counts {widths}")
    return np.concatenate(blocks)


def warn_sample_count(declared: int | None, count: int) -> None:
    """SageMaker's ``num_training_samples`` steers nothing here, where the train channel's
    images are counted: a different value only earns a warning."""
    if declared not in (None, count):
        print(
            f"warning: num_training_samples={declared} but the train "
            f"channel holds {count} images; training uses the images found",
            flush=True,
        )


def run_main(body: Callable[[AlgorithmEnv], int]) -> None:
    """Run an algorithm: an ``AlgorithmError`` becomes the job's failure reason (written
    to ``output/failure``, as SageMaker's containers do) and exit code 2."""
    env = AlgorithmEnv.from_environ()
    try:
        code = body(env)
    except AlgorithmError as e:
        message = f"ClientError: {e}"
        print(message, file=sys.stderr, flush=True)
        try:
            env.output_dir.mkdir(parents=True, exist_ok=True)
            (env.output_dir / "failure").write_text(message)
        except OSError:
            pass  # the message is in the log anyway
        sys.exit(2)
    sys.exit(code)


def run_checkpointed(train: Callable[[AlgorithmEnv, Checkpointer], int]) -> None:
    """``run_main`` for an algorithm that checkpoints: it trains with a ``Checkpointer``
    over the job's checkpoint folder (closed, and its writes flushed, on the way out)."""

    def body(env: AlgorithmEnv) -> int:
        with Checkpointer() as checkpointer:
            return train(env, checkpointer)

    run_main(body)
