"""How long a checkpoint stops the training loop, and how fast a checkpoint restores.

Builds a state dict of fp32 tensors (125 x 1M elements = 500 MB by default) and prints:

(a) the stall per save with ``Checkpointer.save_async``: the time until it returns (the
    in-memory snapshot; the write happens in the background and is flushed untimed);
(b) a synchronous ``torch.save`` of the same state into the same folder, fsynced the way the
    checkpointer fsyncs its files;
    and the ratio a/b, target <= 0.10; a plain copy of the state into buffers of its own
    (the floor of any in-memory snapshot) is printed for reference: on a VM whose memory
    bandwidth varies (3-5x here from hour to hour), (a) follows it and (b) does not;
(c) restore throughput, in MB/s: what a resume does with the committed checkpoint,
    ``latest().load()`` and then ``load_state_dict`` into a model of the same shapes
    (already built, as a resuming script has it); the same with an eager, unmapped load
    (``TorchSerializer(mmap=False)``) is printed for reference;
(d) a plain copy of the same bytes: ``shutil.copyfile`` of its ``state.bin``, in MB/s
    (reading the file fully is printed too, for reference);
    and the ratio c/d, target >= 0.8.

The first save allocates the snapshot buffers that later saves reuse; it is printed on its
own and left out of (a), which is the stall of a training loop's every later save. Each
figure is the median of ``--repeat`` runs, and each ratio the median of the ratios of runs
made back to back (a save next to a sync, a restore next to a copy), so that a burst of
load from elsewhere moves both sides of a ratio together or one run only, never the
verdict. Both reads find the file in the page cache (it was just written), so they compare
the same thing. Needs about 5x ``--mb`` of RAM. Exits 1 if a target is missed.

    .venv/bin/python bench/checkpoint_stall.py [--mb 500] [--repeat 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from spotrun.toolkit import STATE_FILE, Checkpointer, TorchSerializer

ELEMENTS = 1 << 20  # fp32 elements per tensor: 4 MiB each
STALL_TARGET = 0.10
RESTORE_TARGET = 0.8


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def build_state(mb: int) -> dict[str, torch.Tensor]:
    count = max(1, mb // 4)
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(ELEMENTS, generator=generator) for i in range(count)}


class Model(torch.nn.Module):
    """A module whose parameters have the state's names and shapes, for load_state_dict."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, tensor in state.items():
            module, _, leaf = name.rpartition(".")
            holder = torch.nn.Module()
            holder.register_parameter(leaf, torch.nn.Parameter(torch.zeros_like(tensor)))
            self.add_module(module, holder)


def sync_torch_save(state: dict[str, torch.Tensor], path: Path) -> None:
    torch.save(state, path)
    with path.open("rb") as f:
        os.fsync(f.fileno())


def read_fully(path: Path) -> None:
    with path.open("rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="state size in MB (default 500)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--dir", help="where to write (default: a temp folder, removed after)")
    args = parser.parse_args()

    state = build_state(args.mb)
    size = sum(t.numel() * t.element_size() for t in state.values())
    mb = size / 1e6
    print(f"state: {len(state)} fp32 tensors, {mb:.0f} MB, torch {torch.__version__}")

    root = Path(tempfile.mkdtemp(prefix="checkpoint-stall-", dir=args.dir))
    try:
        with Checkpointer(root, keep=2, watch=False) as ck:
            first = timed(lambda: ck.save_async(state, 0))
            ck.flush()
            print(f"    first save, allocating buffers:  {first * 1000:9.1f} ms")
            stalls, syncs, copies_in_memory = [], [], []
            floor = {k: torch.empty_like(t) for k, t in state.items()}
            for step in range(1, args.repeat + 1):
                copies_in_memory.append(
                    timed(lambda: [floor[k].copy_(t) for k, t in state.items()])
                )
                stalls.append(timed(lambda step=step: ck.save_async(state, step)))
                ck.flush()  # untimed: the background write must not overlap the next figure
                target = root / f"sync-{step}.bin"
                syncs.append(timed(lambda target=target: sync_torch_save(state, target)))
                target.unlink()
            stall, sync = statistics.median(stalls), statistics.median(syncs)
            print(f"(a) stall per save, save_async:      {stall * 1000:9.1f} ms")
            memcpy = statistics.median(copies_in_memory)
            print(f"    a plain copy in memory (floor):  {memcpy * 1000:9.1f} ms")
            floor.clear()  # the restore figures need the memory
            print(f"(b) synchronous torch.save + fsync:  {sync * 1000:9.1f} ms")
            ratio = statistics.median(a / b for a, b in zip(stalls, syncs, strict=True))
            stall_ok = ratio <= STALL_TARGET
            print(f"stall / sync = {ratio:.3f} (target <= {STALL_TARGET}) {verdict(stall_ok)}")

            latest = ck.latest()
            assert latest is not None
            state_file = latest.path / STATE_FILE
            file_mb = state_file.stat().st_size / 1e6
            model = Model(state)

            def resume(serializer: TorchSerializer | None = None) -> None:
                model.load_state_dict(latest.load(serializer))

            eager = TorchSerializer(mmap=False)
            loads, eager_loads, copies, reads = [], [], [], []
            for n in range(args.repeat):
                loads.append(timed(resume))
                copy = root / f"copy-{n}.bin"
                copies.append(timed(lambda copy=copy: shutil.copyfile(state_file, copy)))
                copy.unlink()
                eager_loads.append(timed(lambda: resume(eager)))
                reads.append(timed(lambda: read_fully(state_file)))
            restore = file_mb / statistics.median(loads)
            copied = file_mb / statistics.median(copies)
            read = file_mb / statistics.median(reads)
            print(f"(c) restore, load + load_state_dict: {restore:9.0f} MB/s")
            eager_mb = file_mb / statistics.median(eager_loads)
            print(f"    the same, eager (unmapped) load:  {eager_mb:9.0f} MB/s")
            print(f"(d) plain copy, shutil.copyfile:     {copied:9.0f} MB/s")
            print(f"    plain read of the file:          {read:9.0f} MB/s")
            # throughput ratio of a restore and the copy next to it: copy time / load time
            ratio = statistics.median(c / ld for ld, c in zip(loads, copies, strict=True))
            restore_ok = ratio >= RESTORE_TARGET
            print(
                f"restore / copy = {ratio:.2f} (target >= {RESTORE_TARGET}) {verdict(restore_ok)}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if stall_ok and restore_ok else 1


if __name__ == "__main__":
    sys.exit(main())
