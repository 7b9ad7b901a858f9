"""Admission: the checks at submission that need the outside world.

``spec.parse_spec`` checks the request's shape; here we check what it refers to: the
instance type is in the catalog, the entry point exists, every channel can be read. All
checks run before anything is written, so a rejected job leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spotrun.errors import SpecError, SpotrunError
from spotrun.spec import JobSpec, parse_spec


def admit(
    request: Mapping[str, Any],
    known_type: Callable[[str], bool],
    known_types: Callable[[], list[str]],
    check_readable: Callable[[str], None],
) -> JobSpec:
    """Validate a request completely; raises ``SpecError`` naming the field."""
    spec = parse_spec(request)
    itype = spec.resources.instance_type
    if not known_type(itype):
        sample = ", ".join(f"ml.{t}" for t in sorted(known_types())[:8])
        raise SpecError(
            "ResourceConfig.InstanceType",
            f"{itype!r} is not in the instance catalog; known types include {sample}, …",
        )
    algo = spec.algorithm
    if algo.training_image is not None or algo.algorithm_name is not None:
        what = algo.training_image or algo.algorithm_name
        raise SpecError(
            "AlgorithmSpecification",
            f"{what!r}: images and built-in algorithms are not mapped to anything runnable "
            "yet; give a script (SourceDir and EntryPoint)",
        )
    if algo.source_dir is not None and algo.entry_point is not None:
        src = Path(algo.source_dir.removeprefix("file://"))
        if not src.is_dir():
            raise SpecError("AlgorithmSpecification.SourceDir", f"{src} is not a folder")
        entry = src / algo.entry_point
        if not entry.is_file():
            raise SpecError("AlgorithmSpecification.EntryPoint", f"{entry} does not exist")
    for i, ch in enumerate(spec.channels):
        try:
            check_readable(ch.uri)
        except SpotrunError as e:
            raise SpecError(
                f"InputDataConfig[{i}].DataSource.S3DataSource.S3Uri",
                f"channel {ch.name!r} cannot be read: {e}",
            ) from None
    return spec
