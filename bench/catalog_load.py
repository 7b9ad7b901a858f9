"""How long loading the market data takes: the packaged catalog, a catalog the size of
SkyPilot's whole AWS file, and the Spot Advisor snapshot.

Prints the median of ``--repeat`` runs, in milliseconds of wall-clock time and of the
process's CPU time (on a shared, loaded machine the CPU figure is the steadier one), for:

(a) the packaged catalog, parsed from its gzip file (the cache bypassed);
(b) the same through ``Catalog.load()`` once it is cached (what every later load costs);
(c) a synthetic catalog with ``--rows`` rows (default 38,000, about the whole upstream
    ``vms.csv``), made by renaming the packaged rows' types, parsed from plain CSV;
(d) the packaged Spot Advisor snapshot (0.9 MB of JSON), parsed.

Each has a target on its CPU time; the bench exits 1 if one is missed. A process loads
the data once, when it starts (the server, a ``spotrun catalog`` command), so the packaged
catalog gets what a command may spend before it feels slow to start, 400 ms, and the
smaller advisor snapshot 250 ms; a cached load is a lookup, 1 ms; an upstream-sized
catalog, installed on purpose, may take what a server start can afford once, 2 s (about
linear in the rows from (a)). Measured on two loaded cores: 150-195, 0.2, 1000-1060 and
55 ms, so a load that inflates CPU time by half still passes.

    .venv/bin/python bench/catalog_load.py [--repeat 5] [--rows 38000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spotrun.market import Catalog, SpotAdvisor
from spotrun.market._catalog_file import CATALOG_NAME
from spotrun.market._sources import ADVISOR_NAME, catalog_file, packaged
from spotrun.market.catalog import _load

#: CPU milliseconds allowed for (a), (b), (c), (d); see the module docstring
TARGETS_MS = {"packaged": 400.0, "cached": 1.0, "synthetic": 2000.0, "advisor": 250.0}


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Wall and CPU milliseconds, each the median of ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def synthetic(rows: int, folder: Path) -> Path:
    """A catalog of ``rows`` rows: the packaged rows again and again under new type names."""
    text = gzip.decompress(packaged(CATALOG_NAME).read_bytes()).decode()
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    source = list(reader)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for i in range(rows):
        row = list(source[i % len(source)])
        row[0] = f"x{i // len(source)}{row[0]}"
        writer.writerow(row)
    path = folder / "big.csv"
    path.write_text(out.getvalue())
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rows", type=int, default=38_000)
    args = p.parse_args()

    file, source = catalog_file(None)
    packaged_ms = median_ms(lambda: _load(file, source), args.repeat)
    rows = Catalog.load().rows
    cached_ms = median_ms(Catalog.load, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        big = synthetic(args.rows, Path(tmp))
        big_source = Catalog.load(big).source
        big_ms = median_ms(lambda: _load(big, big_source), args.repeat)
    advisor_ms = median_ms(lambda: SpotAdvisor.load(packaged(ADVISOR_NAME)), args.repeat)

    figures = {
        "packaged": (f"(a) packaged catalog ({rows} rows), parsed", packaged_ms),
        "cached": ("(b) packaged catalog, cached Catalog.load()", cached_ms),
        "synthetic": (f"(c) synthetic catalog ({args.rows} rows), parsed", big_ms),
        "advisor": ("(d) Spot Advisor snapshot, parsed", advisor_ms),
    }
    print(f"{'':46} {'wall ms':>9}   {'cpu ms':>9}   target (cpu)")
    ok = True
    for key, (label, (wall, cpu)) in figures.items():
        met = cpu <= TARGETS_MS[key]
        ok = ok and met
        verdict = "met" if met else "NOT met"
        print(f"{label:46} {wall:9.3f}   {cpu:9.3f}   <= {TARGETS_MS[key]:g} ms {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
