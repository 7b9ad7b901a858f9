"""Script mode: bring the user's code into ``/opt/ml/code`` and find the entry point.

``SourceDir`` is a local folder, a ``file://`` URI, or any storage URI; a single
``.tar.gz`` object (what the SageMaker SDK uploads as ``sourcedir.tar.gz``) is unpacked.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from spotrun.agent.outcome import JobInputError
from spotrun.spec import JobSpec
from spotrun.storage import StorageError, download_tree


def stage_code(spec: JobSpec, code_dir: Path) -> Path:
    """Copy the job's code into ``code_dir``; returns the entry point's path there."""
    algo = spec.algorithm
    if algo.training_image is not None or algo.algorithm_name is not None:
        what = "TrainingImage" if algo.training_image is not None else "AlgorithmName"
        raise JobInputError(
            f"ClientError: {what} jobs are not supported by this agent yet; "
            "use script mode (SourceDir and EntryPoint)"
        )
    if algo.source_dir is None or algo.entry_point is None:
        raise JobInputError("ClientError: script mode needs both SourceDir and EntryPoint")
    try:
        download_tree(algo.source_dir, code_dir)
    except StorageError as e:
        raise JobInputError(f"ClientError: cannot fetch SourceDir: {e}") from None
    packed = [p for p in code_dir.iterdir() if p.name.endswith((".tar.gz", ".tgz"))]
    if len(packed) == 1 and len(list(code_dir.iterdir())) == 1:
        with tarfile.open(packed[0]) as tar:
            tar.extractall(code_dir, filter="data")
        packed[0].unlink()
    entry = code_dir / algo.entry_point
    if not entry.is_file():
        raise JobInputError(
            f"ClientError: EntryPoint {algo.entry_point!r} is not a file in SourceDir "
            f"{algo.source_dir!r}"
        )
    return entry
