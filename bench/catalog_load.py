"""How long loading the market data takes: the packaged catalog, a catalog the size of
SkyPilot's whole AWS file, and the Spot Advisor snapshot.

Prints the median of ``--repeat`` runs, in milliseconds of wall-clock time and of the
process's CPU time (on a shared, loaded machine the CPU figure is the steadier one), for:

(a) the packaged catalog, parsed from its gzip file (the cache bypassed);
(b) the same through ``Catalog.load()`` once it is cached (what every later load costs);
(c) a synthetic catalog with ``--rows`` rows (default 38,000, about the whole upstream
    ``vms.csv``), made by renaming the packaged rows' types, parsed from plain CSV;
(d) the packaged Spot Advisor snapshot (0.9 MB of JSON), parsed.

    .venv/bin/python bench/catalog_load.py [--repeat 5] [--rows 38000]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from spotrun.market import Catalog, SpotAdvisor
from spotrun.market._catalog_file import CATALOG_NAME
from spotrun.market._sources import ADVISOR_NAME, catalog_file, packaged
from spotrun.market.catalog import _load


def median_ms(fn: Callable[[], object], repeat: int) -> str:
    """``wall / cpu`` milliseconds, each the median of ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return f"{statistics.median(wall) * 1000:9.3f} / {statistics.median(cpu) * 1000:9.3f} ms"


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


def main() -> None:
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

    print(f"{'':46} {'wall':>9}   {'cpu':>9}")
    print(f"{f'(a) packaged catalog ({rows} rows), parsed':46} {packaged_ms}")
    print(f"{'(b) packaged catalog, cached Catalog.load()':46} {cached_ms}")
    print(f"{f'(c) synthetic catalog ({args.rows} rows), parsed':46} {big_ms}")
    print(f"{'(d) Spot Advisor snapshot, parsed':46} {advisor_ms}")


if __name__ == "__main__":
    main()
