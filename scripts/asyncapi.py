"""Publish the event contract: ``python -m scripts.asyncapi`` writes docs/asyncapi.json and each event version's
JSON Schema to docs/schemas/; ``--check`` writes nothing and exits 1 when a file differs from a fresh generation
(a model or header changed, the published files did not).

The files show the default topic names whatever the environment says, so who ran the script does not matter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.settings import Settings
from schemas.asyncapi import TopicNames, asyncapi_document, event_json_schemas

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOCUMENT = Path("asyncapi.json")
SCHEMAS = Path("schemas")


def published_files(topics: TopicNames) -> dict[Path, str]:
    """Each file's text, by its path under docs/."""
    files = {DOCUMENT: _json_text(asyncapi_document(topics))}
    for name, schema in event_json_schemas().items():
        files[SCHEMAS / f"{name}.json"] = _json_text(schema)
    return files


def stale_files(docs: Path, files: dict[Path, str]) -> list[Path]:
    """The paths under ``docs`` that differ from ``files``: changed, missing, or a schema no version has now."""
    stale = [path for path, text in files.items() if not (docs / path).is_file() or (docs / path).read_text() != text]
    extra = {path.relative_to(docs) for path in (docs / SCHEMAS).glob("*.json")} - set(files)
    return stale + sorted(extra)


def write_files(docs: Path, files: dict[Path, str]) -> None:
    """Write ``files`` under ``docs``, removing schemas of versions that are gone."""
    (docs / SCHEMAS).mkdir(parents=True, exist_ok=True)
    for path in (docs / SCHEMAS).glob("*.json"):
        if path.relative_to(docs) not in files:
            path.unlink()
    for path, text in files.items():
        (docs / path).write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.asyncapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    arguments = parser.parse_args(argv)
    # model_construct: the defaults, not the environment's topic names.
    files = published_files(Settings.model_construct())
    if arguments.check:
        stale = stale_files(DOCS, files)
        for path in stale:
            print(f"docs/{path} is out of date: run python -m scripts.asyncapi", file=sys.stderr)
        return 1 if stale else 0
    write_files(DOCS, files)
    return 0


def _json_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.exit(main())
