"""spotrun.toolkit.torch: a resumed run ends exactly like one that never stopped."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from spotrun.toolkit import Checkpointer  # noqa: E402
from spotrun.toolkit.torch import capture, restore  # noqa: E402

pytestmark = pytest.mark.torch


def seed(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def fresh() -> tuple[Any, Any, Any, Any]:
    # different initial weights than the run being resumed: restore must overwrite them all
    torch.manual_seed(999)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
    return model, optimizer, scheduler, scaler


def train(parts: tuple[Any, Any, Any, Any], steps: int) -> None:
    model, optimizer, scheduler, scaler = parts
    model.train()
    for _ in range(steps):
        # every generator a real loop might use: torch (data, dropout), numpy, python
        x = torch.randn(16, 4)
        y = torch.randn(16, 2)
        noise = torch.from_numpy(np.random.normal(size=(16, 2)).astype("float32"))
        weight = random.random()
        loss = ((model(x) - y - noise) ** 2).mean() * weight
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()


def final_tensors(parts: tuple[Any, Any, Any, Any]) -> dict[str, Any]:
    model, optimizer, _, _ = parts
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                out[f"optimizer.{index}.{key}"] = value
    out["next_draw"] = torch.randn(3)  # the RNG continues identically too
    return out


def test_resume_from_a_checkpoint_is_exact(tmp_path: Path) -> None:
    seed(0)
    straight = fresh()
    seed(0)
    train(straight, 20)
    expected = final_tensors(straight)

    seed(0)
    first = fresh()
    seed(0)
    train(first, 8)
    ck = Checkpointer(tmp_path, watch=False)
    ck.save(capture(*first, position={"epoch": 0, "batch": 8, "seed": 0}), step=8)
    train(first, 3)  # work after the checkpoint is lost, and must not leak into it
    del first
    seed(12345)  # the resumed process starts with other RNG states

    resumed = fresh()
    latest = ck.latest(verify=True)
    assert latest is not None and latest.serializer == "torch"
    position = restore(latest.load(), *resumed)
    assert position == {"epoch": 0, "batch": 8, "seed": 0}
    train(resumed, 20 - position["batch"])
    got = final_tensors(resumed)

    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    assert resumed[2].get_last_lr() == straight[2].get_last_lr()
    assert resumed[3].get_scale() == straight[3].get_scale()


def test_capture_is_a_snapshot(tmp_path: Path) -> None:
    model, optimizer, scheduler, scaler = fresh()
    state = capture(model, optimizer)
    before = state["model"]["0.weight"].clone()
    train((model, optimizer, scheduler, scaler), 2)
    assert torch.equal(state["model"]["0.weight"], before)
    assert not torch.equal(model.state_dict()["0.weight"], before)


def test_restore_refuses_what_was_not_captured() -> None:
    model, optimizer, _, _ = fresh()
    with pytest.raises(ValueError, match="optimizer"):
        restore(capture(model), model, optimizer)
    with pytest.raises(ValueError, match="format"):
        restore({"model": {}}, model)


def test_a_mapped_load_is_private_and_outlives_its_files(tmp_path: Path) -> None:
    """The torch serializer maps the file: writing to a restored tensor must not reach the
    checkpoint, and pruning the checkpoint afterwards must not disturb what was loaded."""
    ck = Checkpointer(tmp_path, keep=1, watch=False)
    weights = torch.arange(1 << 16, dtype=torch.float32)
    first = ck.save({"w": weights.clone()}, 1)
    loaded = first.load()["w"]
    loaded.add_(1.0)  # a training step on the restored tensor
    assert first.verify(), "a write to a loaded tensor changed the checkpoint's file"
    assert torch.equal(first.load()["w"], weights)
    ck.save({"w": weights * 2}, 2)  # keep=1: the first checkpoint is deleted
    assert not first.path.exists()
    assert torch.equal(loaded, weights + 1.0)


def test_a_checkpoint_in_torchs_old_format_still_loads(tmp_path: Path) -> None:
    from spotrun.toolkit import TorchSerializer

    path = tmp_path / "old.bin"
    state = {"w": torch.randn(64), "step": 3}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    back = TorchSerializer().load(path)
    assert back["step"] == 3 and torch.equal(back["w"], state["w"])


def test_a_shared_mmap_default_or_no_private_maps_fall_back_to_a_plain_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmap

    ck = Checkpointer(tmp_path, watch=False)
    saved = ck.save({"w": torch.zeros(1024)}, 1)
    # a program that made shared maps torch's default must not get writable file maps
    with torch.serialization.set_default_mmap_options(mmap.MAP_SHARED):
        saved.load()["w"].add_(1.0)
    assert saved.verify()
    monkeypatch.delattr(mmap, "MAP_PRIVATE")  # as on Windows
    loaded = saved.load()["w"]
    loaded.add_(1.0)
    assert saved.verify() and torch.equal(saved.load()["w"], torch.zeros(1024))


def test_restored_optimizer_state_does_not_keep_the_checkpoint_file(tmp_path: Path) -> None:
    """Optimizers keep the tensors they are given; mapped ones would pin the file."""
    model = torch.nn.Linear(32, 4)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 32)).sum().backward()
    opt.step()
    ck = Checkpointer(tmp_path, watch=False)
    saved = ck.save(capture(model, opt, position={"step": 1}), 1)
    state = saved.load()
    loaded = {
        t.untyped_storage().data_ptr()
        for entry in state["optimizer"]["state"].values()
        for t in entry.values()
        if isinstance(t, torch.Tensor)
    }
    model2 = torch.nn.Linear(32, 4)
    opt2 = torch.optim.Adam(model2.parameters())
    restore(state, model2, opt2)
    kept = {
        t.untyped_storage().data_ptr()
        for entry in opt2.state.values()
        for t in entry.values()
        if isinstance(t, torch.Tensor)
    }
    assert kept and not (kept & loaded)
    for entry, original in zip(opt2.state.values(), opt.state.values(), strict=True):
        assert torch.equal(entry["exp_avg"], original["exp_avg"])
