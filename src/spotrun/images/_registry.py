"""Image mappings: what each pattern stands for, and which of several matches wins."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.images._aws import ALGORITHM_REPOSITORIES, aws_algorithm_image

#: the characters that make a pattern a glob (``fnmatch`` syntax; ``*`` also crosses ``/``)
GLOB_CHARS = frozenset("*?[")
_WILDCARD = re.compile(r"\[[^\]]*\]|[*?]")


@dataclass(frozen=True)
class BakedScript:
    """The image stands for a script baked into it: ``entry_point`` inside ``source_dir``."""

    source_dir: str  # an absolute local folder or a storage URI
    entry_point: str  # relative to source_dir, no ``..``


@dataclass(frozen=True)
class ScriptMode:
    """A framework image: it runs the SageMaker SDK's ``sagemaker_program`` from the
    ``sagemaker_submit_directory`` tarball, with the server's Python."""

    #: the built-in algorithm the image runs when the hyperparameters carry no
    #: ``sagemaker_program`` (``sagemaker-xgboost``: XGBoost's framework image and its
    #: built-in algorithm's); None: such a job is refused
    algorithm: str | None = None


@dataclass(frozen=True)
class AlgorithmRef:
    """The image stands for a built-in algorithm of this name."""

    name: str
    #: True: AWS's own image of SageMaker's built-in algorithm ``name``
    #: (``spotrun.images._aws``), not a mapping of the user's
    aws_image: bool = False


ImageTarget = BakedScript | ScriptMode | AlgorithmRef


@dataclass(frozen=True)
class ImageEntry:
    """One mapping: an image URI (or a glob of them) and what it runs."""

    pattern: str
    target: ImageTarget
    #: where the entry comes from, for messages: the config file and table, or the default
    origin: str

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARS for c in self.pattern)

    @property
    def specificity(self) -> int:
        """How many characters the pattern pins down; among matching globs the highest wins."""
        return len(_WILDCARD.sub("", self.pattern))

    def matches(self, image: str) -> bool:
        if not self.is_glob:
            return image == self.pattern
        return fnmatch.fnmatchcase(image, self.pattern)


def config_entry_origin(path: Path | None, pattern: str) -> str:
    """``/home/u/.spotrun/config.toml [images."<pattern>"]``."""
    where = str(path) if path is not None else "config.toml"
    return f'{where} [images."{pattern}"]'


#: (ECR repository, SDK estimator) of the AWS framework images the SageMaker Python SDK's
#: framework estimators use; all of them run the SDK's script in script mode
FRAMEWORK_REPOSITORIES: tuple[tuple[str, str], ...] = (
    ("pytorch-training", "PyTorch"),
    ("pytorch-training-neuronx", "PyTorch on Trainium"),
    ("tensorflow-training", "TensorFlow"),
    ("mxnet-training", "MXNet"),
    ("huggingface-pytorch-training", "HuggingFace (PyTorch)"),
    ("huggingface-pytorch-training-neuronx", "HuggingFace (PyTorch on Trainium)"),
    ("huggingface-tensorflow-training", "HuggingFace (TensorFlow)"),
    ("sagemaker-scikit-learn", "SKLearn"),
    ("sagemaker-xgboost", "XGBoost"),
)

#: framework images that also serve a built-in algorithm: run when the SDK's
#: ``sagemaker_program`` is absent (the generic ``Estimator`` with the image sets none)
_FRAMEWORK_ALGORITHMS = {"sagemaker-xgboost": "xgboost"}


def _framework_defaults() -> tuple[ImageEntry, ...]:
    out: list[ImageEntry] = []
    for repo, estimator in FRAMEWORK_REPOSITORIES:
        target = ScriptMode(_FRAMEWORK_ALGORITHMS.get(repo))
        # by tag (…/pytorch-training:2.3-gpu-py311) or by digest (…@sha256:…)
        for sep in (":", "@"):
            out.append(ImageEntry(f"*/{repo}{sep}*", target, f"built-in default ({estimator})"))
    return tuple(out)


def aws_algorithm_entry(image: str) -> ImageEntry | None:
    """The entry of AWS's image of a SageMaker built-in algorithm, made for ``image``."""
    found = aws_algorithm_image(image)
    if found is None:
        return None
    return ImageEntry(
        image,
        AlgorithmRef(found.algorithm, aws_image=True),
        f"AWS's image of SageMaker's built-in algorithm {found.algorithm} ({found.region})",
    )


def aws_algorithm_defaults(builtins: Iterable[str]) -> tuple[ImageEntry, ...]:
    """For listings: one row per built-in that AWS publishes an image of, its pattern a
    display form of every region's image (matching is ``aws_algorithm_entry``'s, by
    registry account and region, which no glob can say)."""
    return tuple(
        ImageEntry(
            f"<account>.dkr.ecr.<region>.amazonaws.com/{name}:*",
            AlgorithmRef(name, aws_image=True),
            "AWS's images of SageMaker's built-in algorithm, in AWS's registry of any region",
        )
        for name in ALGORITHM_REPOSITORIES
        if name in builtins
    )


#: spotrun's own name for "the server's Python": script mode, for the SDK's generic Estimator
SPOTRUN_PYTHON = ImageEntry("spotrun/python*", ScriptMode(), "built-in default (spotrun/python)")

DEFAULT_IMAGES: tuple[ImageEntry, ...] = (SPOTRUN_PYTHON, *_framework_defaults())


@dataclass(frozen=True)
class ImageRegistry:
    """The user's mappings (from ``config.toml``) over the built-in defaults.

    ``lookup`` picks, in this order: the user's exact entry; the user's most specific
    matching glob (the one with the most literal characters; on a tie the first in the
    file); AWS's image of a SageMaker built-in algorithm (``aws_algorithm_entry``); then
    the same two steps as the user's over the defaults.
    """

    entries: tuple[ImageEntry, ...] = ()
    #: the config file the entries come from (named in "no mapping" errors)
    config_path: Path | None = None
    defaults: tuple[ImageEntry, ...] = field(default=DEFAULT_IMAGES, repr=False)

    def lookup(self, image: str) -> ImageEntry | None:
        """The entry that decides what ``image`` runs, or None if no entry matches."""
        return (
            _pick(self.entries, image) or aws_algorithm_entry(image) or _pick(self.defaults, image)
        )

    def entry(self, pattern: str) -> ImageEntry | None:
        """The user's entry for exactly this pattern, if any."""
        for e in self.entries:
            if e.pattern == pattern:
                return e
        return None


def _pick(tier: tuple[ImageEntry, ...], image: str) -> ImageEntry | None:
    """The exact entry for ``image`` in ``tier``, else its most specific matching glob."""
    for entry in tier:
        if not entry.is_glob and entry.pattern == image:
            return entry
    globs = [e for e in tier if e.is_glob and e.matches(image)]
    # max() keeps the first of equals: file order breaks ties
    return max(globs, key=lambda e: e.specificity) if globs else None
