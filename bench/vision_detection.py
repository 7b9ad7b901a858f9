"""How well the ``object-detection`` built-in learns the synthetic digit scenes, and how fast.

It writes the scenes of ``examples/vision_digits/make_data.py`` (2,000 to train on, 300 to
validate on, 64x64, one to three digits each), trains the built-in on them in this process
as a job would (its own checkpoints, its thread count), and prints the validation mAP at
IoU 0.5 of the model it wrote (mean over the ten digits of VOC-style average precision),
the target, and the wall time of the training. Target: mAP >= 0.5 within a few minutes on
a 2-core CPU.

    .venv/bin/python bench/vision_detection.py [--train 2000] [--validation 300]
        [--epochs 6] [--seed 0] [--dir D]

Exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

from spotrun.algorithms import object_detection as od
from spotrun.algorithms._env import AlgorithmEnv
from spotrun.toolkit import Checkpointer

TARGET = 0.5  # validation mAP at IoU 0.5
MAKE_DATA = Path(__file__).resolve().parents[1] / "examples" / "vision_digits" / "make_data.py"
CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


def write_scenes(out: Path, train: int, validation: int, seed: int) -> Path:
    """The detection channels under ``out/detection``; the example is a script, not a
    package, so it is imported by its path."""
    spec = importlib.util.spec_from_file_location("vision_digits_make_data", MAKE_DATA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.make_data(out, train, validation, seed, kind="detection")
    return out / "detection"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--validation", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        root = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        started = time.monotonic()
        data = write_scenes(root / "data", args.train, args.validation, args.seed)
        print(f"scenes written in {time.monotonic() - started:.1f} s", flush=True)
        hps = {
            "num_classes": "10",
            "num_training_samples": str(args.train),
            "image_shape": "64",
            "epochs": str(args.epochs),
            "mini_batch_size": "32",
            "optimizer": "adam",
            "learning_rate": "0.003",
            "lr_scheduler_step": str(max(args.epochs - 2, 1)),
            "seed": str(args.seed),
        }
        env = AlgorithmEnv(
            hyperparameters=hps,
            channels={c: data / c for c in CHANNELS},
            content_types={},
            model_dir=root / "model",
            output_dir=root / "output",
            num_cpus=os.cpu_count() or 1,
        )
        os.environ.pop("SPOTRUN_FINISHED_FILE", None)  # not a job: nobody reads it
        started = time.monotonic()
        with Checkpointer(root / "checkpoints") as checkpointer:
            code = od.train(env, checkpointer)
        seconds = time.monotonic() - started
        if code != 0:
            print(f"training exited {code}")
            return 1
        settings = od.read_settings(hps)
        validation = od.load_channel(env, "validation", settings)
        assert validation is not None
        score = od.evaluate(od.load_model(env.model_dir), validation, settings.nms_threshold)
    print(
        f"object-detection on {args.train} synthetic digit scenes, {args.epochs} epochs: "
        f"validation mAP@0.5 {score:.3f} (target >= {TARGET}) in {seconds:.0f} s of training "
        f"on {os.cpu_count()} CPUs"
    )
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
