"""The ``attune personas`` subcommands: output, error lines and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from env_server.personas import commands
from env_server.personas.commands import default_packs_path, list_personas, schema, validate


def run_validate(*paths: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = validate([str(p) for p in paths], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_all_is_sorted() -> None:
    assert commands.__all__ == sorted(commands.__all__)


def test_validate_valid_files(write_pack) -> None:
    one = write_pack("one.yaml", "one", ["ann", "bob"])
    two = write_pack("two.yml", "two", ["cara"])
    code, out, err = run_validate(one, two)
    assert code == 0
    assert err == ""
    assert out.splitlines() == [f"OK {one} (2 personas)", f"OK {two} (1 personas)", "All valid: 2 file(s), 3 personas"]


def test_validate_reports_every_error_with_file_line_field(fixtures_dir: Path) -> None:
    path = fixtures_dir / "several_errors.yaml"
    code, out, err = run_validate(path)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"{path}:10: personas[0] (id=maya).mood: unknown field 'mood'")
    assert lines[1] == f"{path}:17: personas[1] (id=sam).hidden_intention: required field 'hidden_intention' is missing"
    assert [line.split(": ")[0] for line in lines[:6]] == [f"{path}:{n}" for n in (10, 17, 22, 29, 35, 42)]
    assert lines[-1] == "FAILED: 6 error(s); 0 of 1 file(s) valid on their own"


def test_validate_mixed_folder_and_missing_path(fixtures_dir: Path, write_pack, tmp_path: Path) -> None:
    good = write_pack("good.yaml", "good", ["ann"])
    code, out, err = run_validate(good, fixtures_dir, tmp_path / "missing.yaml")
    assert code == 1
    assert out.splitlines() == [f"OK {good} (1 personas)"]
    assert f"{tmp_path / 'missing.yaml'}: no such file or directory" in err.splitlines()
    assert f"{fixtures_dir / 'syntax_error.yaml'}:4: YAML error: mapping values are not allowed here" in err
    assert f"{fixtures_dir / 'empty.yaml'}:1: file is empty" in err
    assert err.splitlines()[-1] == "FAILED: 10 error(s); 1 of 5 file(s) valid on their own"


def test_validate_cross_file_duplicate_ids(write_pack) -> None:
    one = write_pack("one.yaml", "one", ["maya"])
    two = write_pack("two.yaml", "two", ["ann", "maya"])
    code, out, err = run_validate(one, two)
    assert code == 1
    assert out.splitlines() == [f"OK {one} (1 personas)", f"OK {two} (2 personas)"]
    assert err.splitlines()[0] == (
        f"{two}:17: personas[1] (id=maya).id: duplicate persona id 'maya': also defined in {one}:3"
    )


def test_validate_same_file_twice_is_fine(write_pack) -> None:
    one = write_pack("one.yaml", "one", ["maya"])
    assert run_validate(one, one)[0] == 0


def test_validate_empty_folder_fails(tmp_path: Path) -> None:
    code, _, err = run_validate(tmp_path)
    assert code == 1
    assert f"{tmp_path}: no *.yaml or *.yml pack files in this folder" in err


def test_validate_uses_sys_streams_by_default(write_pack, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_pack("one.yaml", "one", ["ann"])
    assert validate([str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {path} (1 personas)")


def test_list_personas_table(write_pack) -> None:
    one = write_pack("one.yaml", "alpha", ["bob", "ann"], difficulty="hard")
    out = io.StringIO()
    assert list_personas([str(one)], out=out) == 0
    rows = [line.split() for line in out.getvalue().splitlines()]
    assert rows == [
        ["id", "name", "intention_type", "difficulty", "language", "initial_emotion", "pack"],
        ["ann", "Ann", "vent", "hard", "en", "35", "alpha"],
        ["bob", "Bob", "vent", "hard", "en", "35", "alpha"],
    ]


def test_list_personas_invalid_pack(fixtures_dir: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert list_personas([str(fixtures_dir / "syntax_error.yaml")], out=out, err=err) == 1
    assert out.getvalue() == ""
    assert "syntax_error.yaml:4:" in err.getvalue()


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert schema() == 0
    printed = capsys.readouterr().out
    parsed = json.loads(printed)
    assert "personas" in parsed["properties"]
    assert printed.startswith('{\n  "$schema"')


def test_default_packs_path_is_the_repo_personas_folder() -> None:
    assert default_packs_path() == Path(__file__).resolve().parents[3] / "personas"


def test_default_packs_validate() -> None:
    code, out, err = run_validate(default_packs_path())
    assert code == 0, err
    assert "OK " in out and "default.yaml" in out
