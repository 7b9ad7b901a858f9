"""The library training code imports: checkpoints that survive any interruption.

It never imports spotrun's control plane and needs only the standard library (torch and
numpy are imported lazily by ``spotrun.toolkit.torch``), so a script using it runs the same
under spotrun, on SageMaker, or in a plain folder on a laptop::

    ckpt = Checkpointer()                       # $SPOTRUN_CHECKPOINT_DIR or /opt/ml/checkpoints
    last = ckpt.latest()
    position = restore(last.load(), model, opt) if last else {"step": 0}
    for step in range(position["step"], total):
        train_one_step()
        if ckpt.interrupted:                    # SIGTERM or the spot notice
            ckpt.save(capture(model, opt, position={"step": step + 1}), step + 1)
            sys.exit(EXIT_CHECKPOINTED)         # "checkpointed, resume me"
    ckpt.finish()                               # the work is done

``Checkpointer(interval=...)`` adds periodic saves, taken when ``ckpt.due()`` says so;
``interval="auto"`` uses Young's optimum from the measured save cost and the pool's mean
time between interruptions (``$SPOTRUN_MTBI_SECONDS``, set by the spotrun agent).
"""

from spotrun.toolkit._cadence import DEFAULT_INTERVAL, MTBI_ENV, Interval
from spotrun.toolkit._checkpointer import (
    CHECKPOINT_FOLDER,
    DEFAULT_ROOT,
    STATE_FILE,
    TEMP_PREFIX,
    Checkpoint,
    Checkpointer,
    SaveHandle,
)
from spotrun.toolkit._interrupt import EXIT_CHECKPOINTED, Interruption, finish
from spotrun.toolkit._interval import young_interval
from spotrun.toolkit._manifest import MANIFEST, FileEntry, Manifest, ManifestError, sha256_of
from spotrun.toolkit._serializer import PickleSerializer, Serializer, TorchSerializer
from spotrun.toolkit._snapshot import snapshot

__all__ = [
    "CHECKPOINT_FOLDER",
    "DEFAULT_INTERVAL",
    "DEFAULT_ROOT",
    "EXIT_CHECKPOINTED",
    "MANIFEST",
    "MTBI_ENV",
    "STATE_FILE",
    "TEMP_PREFIX",
    "Checkpoint",
    "Checkpointer",
    "FileEntry",
    "Interruption",
    "Interval",
    "Manifest",
    "ManifestError",
    "PickleSerializer",
    "SaveHandle",
    "Serializer",
    "TorchSerializer",
    "finish",
    "sha256_of",
    "snapshot",
    "young_interval",
]
