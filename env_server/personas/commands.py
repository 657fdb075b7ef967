"""``attune personas ...`` subcommands: plain functions that print and return an exit code.

The main CLI parses arguments and calls these. Output goes to ``out`` and problems to ``err``
(``sys.stdout`` and ``sys.stderr`` when not given). With no paths, ``validate`` and ``list_personas``
read the repository's ``personas/`` folder.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from env_server.personas.loader import (
    LoadedPack,
    PackError,
    PackValidationError,
    PersonaCatalog,
    discover_pack_files,
    pack_json_schema,
    read_pack,
)

__all__ = ["default_packs_path", "list_personas", "schema", "validate"]

_COLUMNS = ("id", "name", "intention_type", "difficulty", "language", "initial_emotion", "pack")


def default_packs_path() -> Path:
    """The repository's top-level ``personas/`` folder."""
    return Path(__file__).resolve().parents[2] / "personas"


def validate(paths: Sequence[str | Path], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate pack files and folders of them, reporting every problem.

    Prints ``OK FILE (N personas)`` for each valid file, each problem as ``FILE:LINE: FIELD: MESSAGE``
    to ``err`` (including persona ids defined in more than one file), then a summary.

    Args:
        paths: Files or folders; the default packs folder when empty.
        out: Where OK lines and a clean summary go.
        err: Where problems and a failing summary go.

    Returns:
        0 when every file is valid and ids are unique across them, 1 otherwise.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    errors: list[PackError] = []
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths or [str(default_packs_path())]:
        try:
            found = discover_pack_files(path)
        except FileNotFoundError:
            errors.append(PackError(str(path), None, "", "no such file or directory"))
            continue
        if not found:
            errors.append(PackError(str(path), None, "", "no *.yaml or *.yml pack files in this folder"))
        for file in found:
            if file.resolve() not in seen:  # a file named twice is validated once
                seen.add(file.resolve())
                files.append(file)
    _report(errors, err)

    loaded: list[LoadedPack] = []
    for file in files:
        try:
            pack = read_pack(file)
        except PackValidationError as exc:
            errors += _report(exc.errors, err)
            continue
        loaded.append(pack)
        print(f"OK {file} ({len(pack.pack.personas)} personas)", file=out)
    try:
        catalog = PersonaCatalog.from_packs(loaded)
    except PackValidationError as exc:
        errors += _report(exc.errors, err)

    if errors:
        print(f"FAILED: {len(errors)} error(s); {len(loaded)} of {len(files)} file(s) valid on their own", file=err)
        return 1
    print(f"All valid: {len(files)} file(s), {len(catalog)} personas", file=out)
    return 0


def list_personas(paths: Sequence[str | Path] = (), out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print a table of the personas in the given packs (the default packs folder when empty).

    Returns:
        0, or 1 when a pack is invalid (its problems go to ``err``).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        catalog = PersonaCatalog.load(list(paths) or [default_packs_path()])
    except PackValidationError as exc:
        for error in exc.errors:
            print(error, file=err)
        return 1
    rows = [_COLUMNS]
    for public in catalog.public():
        fields = public.model_dump(mode="json")
        rows.append(tuple(str(fields[column]) for column in _COLUMNS))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def schema(out: TextIO | None = None) -> int:
    """Print the JSON Schema of a pack file (indent 2)."""
    out = out or sys.stdout
    print(json.dumps(pack_json_schema(), indent=2), file=out)
    return 0


def _report(errors: list[PackError], err: TextIO) -> list[PackError]:
    for error in errors:
        print(error, file=err)
    return errors
