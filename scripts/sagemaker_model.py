#!/usr/bin/env python3
"""Write the SageMaker shapes spotrun validates against, taken from the installed botocore.

botocore ships AWS's own service model for SageMaker: every shape with its limits. spotrun
needs only the shapes reachable from the training and tuning operations it serves, and of
each shape only what validation and response-walking read (type, members, required,
member/key/value, min, max, pattern, enum). This script cuts that out of botocore's raw
JSON and writes it, with botocore's version, into the package
(``src/spotrun/spec/data/sagemaker-shapes.json``), so that at run time spotrun reads its
own copy and never imports botocore. The output is deterministic (sorted keys), so a
botocore upgrade shows up as a readable diff.

    python scripts/sagemaker_model.py            # write the file again
    python scripts/sagemaker_model.py --check    # fail when it differs from botocore's
    python scripts/sagemaker_model.py --write-docs   # write docs/sagemaker-fields.md again

``--write-docs`` writes the page generated from the field support table
(``spotrun.spec._support.render_markdown``), which a test keeps equal to the table.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import botocore
import botocore.loaders

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src/spotrun/spec/data/sagemaker-shapes.json"

#: the operations spotrun serves; their input and output shapes are the roots of the walk
OPERATIONS = (
    "CreateTrainingJob",
    "DescribeTrainingJob",
    "ListTrainingJobs",
    "StopTrainingJob",
    "UpdateTrainingJob",
    "DeleteTrainingJob",
    "AddTags",
    "ListTags",
    "DeleteTags",
    "CreateHyperParameterTuningJob",
    "DescribeHyperParameterTuningJob",
    "ListHyperParameterTuningJobs",
    "StopHyperParameterTuningJob",
    "ListTrainingJobsForHyperParameterTuningJob",
)
#: what of a shape validation needs; documentation and flags such as ``box`` are left out
KEPT = ("type", "required", "min", "max", "pattern", "enum")


def _slim(shape: dict[str, Any]) -> dict[str, Any]:
    """A shape with only the kept keys; references to other shapes become their names."""
    out = {k: shape[k] for k in KEPT if k in shape}
    for ref in ("member", "key", "value"):
        if ref in shape:
            out[ref] = shape[ref]["shape"]
    if "members" in shape:
        out["members"] = {name: m["shape"] for name, m in shape["members"].items()}
    return out


def build() -> dict[str, Any]:
    """The document to ship, from the installed botocore's raw service model."""
    model = botocore.loaders.create_loader().load_service_model("sagemaker", "service-2")
    shapes: dict[str, Any] = model["shapes"]
    operations: dict[str, dict[str, str]] = {}
    kept: dict[str, Any] = {}

    def walk(name: str) -> None:
        if name in kept:
            return
        shape = shapes[name]
        kept[name] = _slim(shape)
        refs = [shape[r]["shape"] for r in ("member", "key", "value") if r in shape]
        refs += [m["shape"] for m in shape.get("members", {}).values()]
        for ref in refs:
            walk(ref)

    for op in OPERATIONS:
        spec = model["operations"][op]
        operations[op] = {io: spec[io]["shape"] for io in ("input", "output") if io in spec}
        for shape_name in operations[op].values():
            walk(shape_name)
    return {
        "apiVersion": model["metadata"]["apiVersion"],
        "botocoreVersion": botocore.__version__,
        "operations": operations,
        "shapes": kept,
    }


def render(doc: dict[str, Any]) -> str:
    """The file's text: sorted keys, one member per line, a final newline."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def check(target: Path = TARGET) -> str | None:
    """Why the shipped file is not what the installed botocore gives, or None when it is."""
    want = render(build())
    have = target.read_text(encoding="utf-8") if target.exists() else ""
    if have == want:
        return None
    diff = difflib.unified_diff(
        have.splitlines(), want.splitlines(), "shipped", "from botocore", lineterm="", n=1
    )
    shown = "\n".join(list(diff)[:40])
    return (
        f"{target} differs from what botocore {botocore.__version__} gives; "
        f"run `python scripts/sagemaker_model.py` and commit the result\n{shown}"
    )


def write_docs() -> int:
    """Write the field support table's Markdown page where the docs test looks for it."""
    # imported here: the shapes' own modes need only botocore, not spotrun on the path
    from spotrun.spec._support import DOCS_PAGE, render_markdown

    page = ROOT / DOCS_PAGE
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the field support page (docs/sagemaker-fields.md) from the table instead",
    )
    args = parser.parse_args(argv)
    if args.write_docs:
        return write_docs()
    if args.check:
        problem = check()
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{TARGET.name} matches botocore {botocore.__version__}")
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(render(build()), encoding="utf-8")
    print(f"wrote {TARGET} from botocore {botocore.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
