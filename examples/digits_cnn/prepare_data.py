"""Write scikit-learn's bundled digits dataset into a training channel folder.

Usage: python prepare_data.py [CHANNEL_DIR]   (default: ./data next to this file)

Produces ``train.npz`` and ``test.npz`` with ``x`` (float32, N×1×8×8, in [0, 1]) and
``y`` (int64). The split is fixed (stratified, seeded), so running this twice yields
byte-identical arrays; existing files with the same content are left untouched.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TEST_SIZE = 0.2
SPLIT_SEED = 0


def build_split() -> dict[str, dict[str, np.ndarray]]:
    digits = load_digits()
    # Pixel values in load_digits are integers 0..16.
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y
    )
    return {"train": {"x": x_tr, "y": y_tr}, "test": {"x": x_te, "y": y_te}}


def _write_if_changed(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    if path.exists() and path.read_bytes() == payload:
        return False
    # Write-then-rename so a training job reading the channel never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def prepare(channel_dir: Path) -> None:
    channel_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in build_split().items():
        path = channel_dir / f"{name}.npz"
        changed = _write_if_changed(path, arrays)
        state = "wrote" if changed else "unchanged"
        print(f"{state} {path} ({len(arrays['y'])} samples)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "channel_dir",
        nargs="?",
        type=Path,
        default=Path(__file__).resolve().parent / "data",
        help="folder to write train.npz and test.npz into",
    )
    args = parser.parse_args(argv)
    prepare(args.channel_dir)


if __name__ == "__main__":
    main()
