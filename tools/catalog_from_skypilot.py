"""Derive spotrun's packaged instance catalog from SkyPilot's AWS catalog.

    .venv/bin/python tools/catalog_from_skypilot.py vms.csv --commit <sha> [--date YYYY-MM-DD]

``vms.csv`` is ``catalogs/v7/aws/vms.csv`` of ``skypilot-org/skypilot-catalog`` (for
example ``git -C <clone> show <sha>:catalogs/v7/aws/vms.csv > vms.csv``). The script:

1. reads the SageMaker training instance types (the ``TrainingInstanceType`` enum of the
   installed botocore's SageMaker service model) and writes them, sorted, to
   ``sagemaker-training-types.txt``;
2. checks every row of ``vms.csv`` as ``spotrun catalog update`` does, keeps the rows
   whose EC2 type is behind an ``ml.*`` type, unchanged and in upstream order, and writes
   them to ``aws-ec2-prices.csv.gz`` (reproducible gzip) with ``aws-ec2-prices.json``,
   the source note ``spotrun catalog`` shows;
3. prints what it kept and the ``ml.*`` types that have no EC2 row.

Update ``src/spotrun/market/data/README.md`` with the figures it prints.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import botocore

from spotrun.market._catalog_file import (
    CATALOG_NAME,
    SOURCE_NAME,
    catalog_text,
    filtered,
    gzip_bytes,
    read_catalog_bytes,
)
from spotrun.market.catalog import SAGEMAKER_TYPES_NAME

DATA = Path(__file__).resolve().parents[1] / "src" / "spotrun" / "market" / "data"


def training_types(model: Path | None) -> list[str]:
    """The ``ml.*`` names of botocore's ``TrainingInstanceType`` enum."""
    if model is None:
        folder = Path(botocore.__file__).parent / "data" / "sagemaker" / "2017-07-24"
        candidates = [folder / "service-2.json", folder / "service-2.json.gz"]
        model = next((p for p in candidates if p.is_file()), None)
        if model is None:
            sys.exit(f"no SageMaker service model under {folder}")
    raw = model.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return sorted(json.loads(raw)["shapes"]["TrainingInstanceType"]["enum"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("vms_csv", type=Path, help="SkyPilot's catalogs/v7/aws/vms.csv")
    p.add_argument("--out", type=Path, default=DATA, help="the package data folder")
    p.add_argument("--botocore-model", type=Path, help="SageMaker service-2.json(.gz)")
    p.add_argument("--repository", default="skypilot-org/skypilot-catalog")
    p.add_argument("--path", default="catalogs/v7/aws/vms.csv")
    p.add_argument("--commit", required=True, help="the upstream commit the file is from")
    p.add_argument("--date", help="the commit's date (YYYY-MM-DD), if known")
    p.add_argument(
        "--input-note",
        default="the whole upstream file",
        help="what vms_csv is, if not the whole upstream file (kept in the source note)",
    )
    args = p.parse_args()

    ml_types = training_types(args.botocore_model)
    wanted = {t.removeprefix("ml.") for t in ml_types}
    data = args.vms_csv.read_bytes()
    parsed = read_catalog_bytes(data, str(args.vms_csv))
    rows = filtered(parsed, wanted.__contains__)
    kept = {r.instance_type for r in rows}
    regions = sorted({r.region for r in rows})

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / SAGEMAKER_TYPES_NAME).write_text("\n".join(ml_types) + "\n", encoding="utf-8")
    (args.out / CATALOG_NAME).write_bytes(gzip_bytes(catalog_text(parsed.header, rows)))
    note = {
        "source": "SkyPilot AWS catalog",
        "repository": args.repository,
        "path": args.path,
        "commit": args.commit,
        "date": args.date,
        "filter": f"EC2 types behind the {len(ml_types)} SageMaker training instance types "
        f"(botocore {botocore.__version__}), every region",
        "input": args.input_note,
        "rows": len(rows),
    }
    (args.out / SOURCE_NAME).write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")

    missing = sorted(t for t in ml_types if t.removeprefix("ml.") not in kept)
    total = len(parsed.rows) + parsed.skipped + parsed.duplicates
    print(
        f"read {total} rows: {parsed.skipped} without an on-demand price and "
        f"{parsed.duplicates} repeating a type and zone were skipped"
    )
    print(f"kept {len(rows)} rows: {len(kept)} types in {len(regions)} regions")
    print(f"regions: {', '.join(regions)}")
    print(f"{len(ml_types)} ml types; {len(missing)} without an EC2 row: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
