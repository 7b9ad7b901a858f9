"""spotrun.toolkit.lightning: Lightning checkpoints through a Checkpointer, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from spotrun.toolkit.lightning import (  # noqa: E402
    CKPT_FILE,
    CheckpointCallback,
    ResumableSampler,
    resume_path,
)

pytestmark = [
    pytest.mark.torch,
    # Lightning's advice for a plain DataLoader; ResumableSampler is what makes it moot
    pytest.mark.filterwarnings("ignore:.*dataloader is not resumable"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
]

SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 3
BATCH = 64


@pytest.fixture(scope="module")
def digits() -> tuple[Any, Any]:
    return load_data()


def load_data() -> tuple[Any, Any]:
    """Digits as tensors: all of it to train on, every ninth image to validate on."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    data = torch.utils.data.TensorDataset(
        torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    )
    return data, torch.utils.data.Subset(data, range(0, 1797, 9))


class Net(L.LightningModule):
    """A small MLP with dropout (training draws random numbers) and an LR schedule."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, 32),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(32, 10),
        )

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)]


class Pace(L.Callback):
    """Prints each step; with ``HOLD_AT`` in the environment, waits after that step until
    the process gets SIGTERM, so a test's signal lands mid-training however slowly it
    comes. Made before the attempt's Checkpointer, whose handler then chains to this one."""

    def __init__(self) -> None:
        self.hold_at = int(os.environ.get("HOLD_AT", "-1"))
        self.terminated = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.terminated = True

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        print(f"step {trainer.global_step}", flush=True)
        give_up = time.monotonic() + 120
        while trainer.global_step == self.hold_at and not self.terminated:
            assert time.monotonic() < give_up, "no SIGTERM came"
            time.sleep(0.01)


class Tally(L.Callback):
    """Records which batches this attempt trained, and sends this process SIGTERM after
    batch ``stop`` = (epoch, index), as the agent would on a notice."""

    def __init__(self, stop: tuple[int, int] | None = None, at_validation: bool = False) -> None:
        self.stop = stop
        self.at_validation = at_validation
        self.trained: list[tuple[int, int]] = []

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.trained.append((trainer.current_epoch, batch_idx))
        if (trainer.current_epoch, batch_idx) == self.stop and not self.at_validation:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if self.at_validation and not trainer.sanity_checking and self.trained[-1:] == [self.stop]:
            os.kill(os.getpid(), signal.SIGTERM)


def attempt(
    root: Path,
    digits: tuple[Any, Any],
    tally: Tally,
    seed: int = 0,
    use_sampler: bool = True,
    catch: bool = True,
    accumulate: int = 1,
    **saver_kw: Any,
) -> Any:
    """One attempt, as a fresh process would make it: the model, or None if it exited
    (with ``catch=False`` the exit goes on, as in a real process)."""
    train_set, val_set = digits
    torch.manual_seed(seed)
    with Checkpointer(root) as ckpt:
        sampler = ResumableSampler(train_set, seed=3) if use_sampler else None
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=BATCH,
            sampler=sampler,
            shuffle=None if use_sampler else True,
            generator=torch.Generator() if use_sampler else None,
        )
        val = torch.utils.data.DataLoader(val_set, batch_size=50)
        saver = CheckpointCallback(ckpt, sampler=sampler, **saver_kw)
        trainer = L.Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            devices=1,
            deterministic=True,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=1,
            accumulate_grad_batches=accumulate,
            callbacks=[tally, saver],
        )
        model = Net()
        try:
            trainer.fit(model, loader, val, ckpt_path=resume_path(ckpt))
        except SystemExit as e:
            if not catch:
                raise
            assert e.code == EXIT_CHECKPOINTED
            assert trainer.should_stop
            return None
    return model


def same_parameters(a: Any, b: Any) -> bool:
    pairs = zip(a.state_dict().items(), b.state_dict().items(), strict=True)
    return all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in pairs)


@pytest.fixture(scope="module")
def straight(digits: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    tally = Tally()
    model = attempt(tmp_path_factory.mktemp("straight"), digits, tally)
    per_epoch = -(-len(digits[0]) // BATCH)
    assert tally.trained == [(e, b) for e in range(EPOCHS) for b in range(per_epoch)]
    return model


def test_interrupted_mid_epoch_and_at_epoch_ends_then_resumed_equals_uninterrupted(
    tmp_path: Path, digits: tuple[Any, Any], straight: Any
) -> None:
    last = -(-len(digits[0]) // BATCH) - 1
    trained: list[tuple[int, int]] = []
    # mid-epoch, in the validation after an epoch, the last batch of an epoch, mid-epoch
    stops = [((0, 10), False), ((0, last), True), ((1, last), False), ((2, 4), False)]
    for n, (stop, at_validation) in enumerate(stops):
        tally = Tally(stop, at_validation)
        # the first attempt starts like the straight run; later ones from other weights and
        # RNG states, which the checkpoint must overwrite
        assert attempt(tmp_path, digits, tally, seed=100 * n) is None
        trained += tally.trained
        saved = Checkpointer(tmp_path, watch=False).latest()
        assert saved is not None and (saved.path / CKPT_FILE).is_file()
    tally = Tally()
    resumed = attempt(tmp_path, digits, tally, seed=999)
    trained += tally.trained
    # every batch trained exactly once over the five attempts
    per_epoch = last + 1
    assert trained == [(e, b) for e in range(EPOCHS) for b in range(per_epoch)]
    assert same_parameters(straight, resumed)


def test_a_sigterm_during_gradient_accumulation_saves_at_the_optimizer_step(
    tmp_path: Path, digits: tuple[Any, Any]
) -> None:
    """Lightning's own SIGTERM handling would end fit right after the batch (exit 0, no
    checkpoint); the save has to wait for the accumulated step, then exit 75."""
    per_epoch = -(-len(digits[0]) // BATCH)
    reference = attempt(tmp_path / "straight", digits, Tally(), accumulate=4)
    tally = Tally((1, 5))  # batches 4..7 make one step: 5 is mid-accumulation
    assert attempt(tmp_path / "run", digits, tally, accumulate=4) is None
    assert tally.trained[-1] == (1, 7)  # trained on to the step's last batch, no further
    saved = Checkpointer(tmp_path / "run", watch=False).latest()
    steps_per_epoch = -(-per_epoch // 4)
    assert saved is not None and saved.step == steps_per_epoch + 2
    trained = tally.trained
    tally = Tally()
    resumed = attempt(tmp_path / "run", digits, tally, seed=7, accumulate=4)
    trained += tally.trained
    assert trained == [(e, b) for e in range(EPOCHS) for b in range(per_epoch)]
    assert same_parameters(reference, resumed)


def test_without_the_sampler_a_mid_epoch_resume_is_not_exact(
    tmp_path: Path, digits: tuple[Any, Any], straight: Any
) -> None:
    # the control for the test above: Lightning alone starts the epoch's data over
    assert attempt(tmp_path, digits, Tally((1, 6)), use_sampler=False) is None
    resumed = attempt(tmp_path, digits, Tally(), seed=5, use_sampler=False)
    assert not same_parameters(straight, resumed)


def test_periodic_checkpoints_by_steps_and_epochs(tmp_path: Path, digits: tuple[Any, Any]) -> None:
    model = attempt(tmp_path, digits, Tally(), every_n_train_steps=20, every_n_epochs=2)
    per_epoch = -(-len(digits[0]) // BATCH)
    total = EPOCHS * per_epoch
    ckpt = Checkpointer(tmp_path, watch=False)
    steps = sorted(c.step for c in ckpt.checkpoints())
    # keep=3 by default: the newest three of 20, 40, 58 (end of epoch 2), 60, 80, 87 (end)
    expected = sorted({*range(20, total + 1, 20), 2 * per_epoch, total})[-3:]
    assert steps == expected
    path = resume_path(ckpt)
    assert path is not None and Path(path).parent == ckpt.latest().path  # type: ignore[union-attr]
    state = torch.load(path, weights_only=True)
    assert state["global_step"] == total
    assert torch.equal(state["state_dict"]["net.0.weight"], model.net[0].weight)


def test_resume_path_and_bad_settings(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, watch=False)
    assert resume_path(ckpt) is None
    ckpt.save({"other": 1}, 4)
    with pytest.raises(ValueError, match="not written by"):
        resume_path(ckpt)
    with pytest.raises(ValueError, match="every_n_epochs"):
        CheckpointCallback(ckpt, every_n_epochs=0)
    sampler = ResumableSampler(10, seed=1)
    assert sorted(sampler) == list(range(10))
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.resume_at(0, 7)
    assert list(sampler) == first[7:]
    assert len(sampler) == 10 and list(sampler) == first  # whole epochs again
    assert list(ResumableSampler(4, shuffle=False)) == [0, 1, 2, 3]


SCRIPT = """
import sys
sys.path[:0] = [{tests!r}]
from pathlib import Path
import torch
import test_toolkit_lightning as t

model = t.attempt(Path(sys.argv[1]), t.load_data(), t.Pace(), catch=False)
torch.save(model.state_dict(), sys.argv[2])
"""


@pytest.mark.slow  # two processes importing Lightning: about 15 s on two cores
def test_a_real_process_exits_75_on_sigterm_and_the_next_one_ends_like_a_straight_run(
    tmp_path: Path, straight: Any
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = [sys.executable, str(script), str(tmp_path / "ckpt"), str(tmp_path / "model.pt")]
    first = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "HOLD_AT": "40"},
    )
    assert first.stdout is not None
    for line in first.stdout:
        if line.strip() == "step 40":  # mid-way through the second epoch
            first.send_signal(signal.SIGTERM)
            break
    _, err = first.communicate(timeout=60)
    assert first.returncode == EXIT_CHECKPOINTED, err[-3000:]
    assert not (tmp_path / "model.pt").exists()
    stopped = Checkpointer(tmp_path / "ckpt", watch=False).latest(verify=True)
    assert stopped is not None and stopped.step in (40, 41)  # saved at the next boundary

    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"step {stopped.step + 1}\n" in second.stdout
    assert f"step {stopped.step}\n" not in second.stdout  # nothing trained twice
    resumed = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(v, resumed[k]) for k, v in straight.state_dict().items())
