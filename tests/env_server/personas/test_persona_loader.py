"""load_pack: valid packs load; every problem comes back with its file, line and field."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from env_server.personas import loader
from env_server.personas.loader import (
    PackError,
    PackValidationError,
    discover_pack_files,
    load_pack,
    pack_json_schema,
    read_pack,
)
from env_server.personas.schema import Pack

PackText = Callable[..., str]


def errors_of(path: Path) -> list[PackError]:
    with pytest.raises(PackValidationError) as info:
        load_pack(path)
    return info.value.errors


def test_all_is_sorted_and_complete() -> None:
    defined_here = {
        name
        for name, value in vars(loader).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == loader.__name__
    }
    assert loader.__all__ == sorted(loader.__all__)
    assert set(loader.__all__) == defined_here


def test_minimal_pack_loads(write_pack) -> None:
    path = write_pack("mini.yaml", "mini", ["maya"])
    pack = load_pack(path)
    assert isinstance(pack, Pack)
    assert pack.pack == "mini"
    assert [p.id for p in pack.personas] == ["maya"]
    assert pack.personas[0].difficulty.value == "normal"


def test_read_pack_knows_the_line_of_each_id(write_pack) -> None:
    loaded = read_pack(write_pack("two.yaml", "two", ["ann", "bob"]))
    assert dict(loaded.id_lines) == {"ann": 3, "bob": 17}


def test_several_errors_each_at_its_line_and_field(fixtures_dir: Path) -> None:
    path = fixtures_dir / "several_errors.yaml"
    errors = errors_of(path)

    assert {e.file for e in errors} == {str(path)}
    assert [(e.line, e.field) for e in errors] == [
        (10, "personas[0] (id=maya).mood"),
        (17, "personas[1] (id=sam).hidden_intention"),
        (22, "personas[1] (id=sam).difficulty"),
        (29, "personas[2] (id=Lee-Upper).id"),
        (35, "personas[2] (id=Lee-Upper).initial_emotion"),
        (42, "personas[2] (id=Lee-Upper).reactions.fit"),
    ]
    messages = [e.message for e in errors]
    assert messages[0].startswith("unknown field 'mood'; allowed: id, name,")
    assert messages[1] == "required field 'hidden_intention' is missing"
    assert messages[2] == "Input should be 'easy', 'normal' or 'hard' (got 'extreme')"
    assert messages[3].startswith("String should match pattern") and "(got 'Lee-Upper')" in messages[3]
    assert messages[4] == "Input should be less than or equal to 99 (got 150)"
    assert messages[5].startswith("duplicate key 'fit' (first at line 40)")


def test_error_str_is_file_line_field_message(fixtures_dir: Path) -> None:
    path = fixtures_dir / "several_errors.yaml"
    first = errors_of(path)[0]
    assert str(first).startswith(f"{path}:10: personas[0] (id=maya).mood: unknown field 'mood'")


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (PackError("a.yaml", 3, "personas[0].name", "bad"), "a.yaml:3: personas[0].name: bad"),
        (PackError("a.yaml", None, "", "cannot read file"), "a.yaml: cannot read file"),
        (PackError("a.yaml", 1, "", "file is empty"), "a.yaml:1: file is empty"),
    ],
)
def test_pack_error_str(error: PackError, text: str) -> None:
    assert str(error) == text


def test_validation_error_message_lists_every_error(fixtures_dir: Path) -> None:
    with pytest.raises(PackValidationError, match=r"6 error\(s\)") as info:
        load_pack(fixtures_dir / "several_errors.yaml")
    assert str(info.value).count("several_errors.yaml:") == 6


def test_yaml_syntax_error_reports_its_line(fixtures_dir: Path) -> None:
    path = fixtures_dir / "syntax_error.yaml"
    [error] = errors_of(path)
    assert (error.file, error.line, error.field) == (str(path), 4, "")
    assert error.message == "YAML error: mapping values are not allowed here"


@pytest.mark.parametrize(
    ("filename", "line", "message"),
    [
        ("empty.yaml", 1, "file is empty"),
        ("top_level_list.yaml", 1, "top level must be a mapping with 'pack' and 'personas', not a list"),
    ],
)
def test_empty_or_non_mapping_file(fixtures_dir: Path, filename: str, line: int, message: str) -> None:
    [error] = errors_of(fixtures_dir / filename)
    assert error.line == line
    assert error.message.startswith(message)


def test_unreadable_file_is_a_pack_error(tmp_path: Path) -> None:
    [error] = errors_of(tmp_path / "missing.yaml")
    assert error.line is None
    assert error.message.startswith("cannot read file")


def test_more_than_one_document_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "two_docs.yaml"
    path.write_text("pack: a\n---\npack: b\n", encoding="utf-8")
    [error] = errors_of(path)
    assert error.line == 2
    assert "expected a single document" in error.message


def test_duplicate_persona_id_in_one_file_points_at_the_repeat(tmp_path: Path, pack_text: PackText) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(pack_text("dup", ["ann", "bob", "ann"]), encoding="utf-8")
    [error] = errors_of(path)
    assert (error.line, error.field) == (31, "personas[2] (id=ann).id")
    assert error.message == "duplicate persona id 'ann' (first at line 3, personas[0])"


def test_duplicate_persona_id_reported_alongside_other_errors(tmp_path: Path, pack_text: PackText) -> None:
    text = pack_text("dup", ["ann", "ann"]).replace("initial_emotion: 35", "initial_emotion: 5", 1)
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    assert [(e.line, e.field) for e in errors_of(path)] == [
        (10, "personas[0] (id=ann).initial_emotion"),
        (17, "personas[1] (id=ann).id"),
    ]


def test_missing_top_level_field_points_at_the_top_mapping(tmp_path: Path) -> None:
    path = tmp_path / "nopersonas.yaml"
    path.write_text("# header comment\npack: empty\n", encoding="utf-8")
    [error] = errors_of(path)
    assert (error.line, error.field, error.message) == (2, "personas", "required field 'personas' is missing")


def test_nested_missing_field_and_typo_suggestion(tmp_path: Path, pack_text: PackText) -> None:
    text = pack_text("typo", ["ann"]).replace("      miss: Pulls back.\n", "").replace("    name:", "    nmae:")
    path = tmp_path / "typo.yaml"
    path.write_text(text, encoding="utf-8")
    errors = errors_of(path)
    assert [(e.line, e.field) for e in errors] == [
        (3, "personas[0] (id=ann).name"),
        (4, "personas[0] (id=ann).nmae"),
        # a missing field points at the first line of its mapping: `high:` below `reactions:` (line 11)
        (12, "personas[0] (id=ann).reactions.miss"),
    ]
    assert errors[1].message == "unknown field 'nmae'; did you mean 'name'?"


def test_unquoted_yaml_boolean_gets_a_hint(tmp_path: Path, pack_text: PackText) -> None:
    path = tmp_path / "norway.yaml"
    path.write_text(pack_text("norway", ["ann"]).replace("name: Ann", "name: no"), encoding="utf-8")
    [error] = errors_of(path)
    assert (error.line, error.field) == (4, "personas[0] (id=ann).name")
    assert "YAML reads unquoted no as bool" in error.message


def test_model_validator_error_points_at_the_persona(tmp_path: Path, pack_text: PackText) -> None:
    path = tmp_path / "belief.yaml"
    text = pack_text("belief", ["ann"]).replace("intention_type: vent", "intention_type: false_belief")
    path.write_text(text, encoding="utf-8")
    [error] = errors_of(path)
    assert (error.line, error.field) == (3, "personas[0] (id=ann)")
    assert error.message == "intention_type false_belief needs at least one entry in false_beliefs"


def test_merge_keys_load_and_overrides_are_not_duplicates(tmp_path: Path, pack_text: PackText) -> None:
    text = pack_text("merge", ["ann", "bob"]).replace("    reactions:\n", "    reactions: &base\n", 1)
    bob = text.index("  - id: bob")
    reactions = text.index("    reactions:\n", bob)
    text = text[:reactions] + "    reactions:\n      <<: *base\n      high: Laughs.\n"
    path = tmp_path / "merge.yaml"
    path.write_text(text, encoding="utf-8")
    pack = load_pack(path)
    assert pack.personas[1].reactions.high == "Laughs."
    assert pack.personas[1].reactions.low == pack.personas[0].reactions.low


def test_discover_pack_files(tmp_path: Path) -> None:
    for name in ["b.yml", "a.yaml", "notes.txt", ".hidden.yaml", "sub/c.yaml"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("pack: x\n", encoding="utf-8")
    assert discover_pack_files(tmp_path) == [tmp_path / "a.yaml", tmp_path / "b.yml"]
    assert discover_pack_files(tmp_path / "notes.txt") == [tmp_path / "notes.txt"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        discover_pack_files(tmp_path / "nope")


def test_pack_json_schema() -> None:
    schema = pack_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == "Attune persona pack"
    assert {"pack", "personas"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    assert re.search("Persona", str(schema["$defs"].keys()))


def test_persona_public_hides_private_fields(write_pack) -> None:
    persona = load_pack(write_pack("p.yaml", "pub", ["maya"])).personas[0]
    public = persona.public("pub").model_dump()
    assert set(public) == {"id", "name", "language", "difficulty", "intention_type", "initial_emotion", "pack"}
    for private in ("background", "hidden_intention", "reactions", "false_beliefs", "profile"):
        assert private not in public
    assert persona.hidden_intention not in str(public) and persona.background not in str(public)


def test_validation_error_pickles_with_its_errors(fixtures_dir: Path) -> None:
    with pytest.raises(PackValidationError) as info:
        load_pack(fixtures_dir / "syntax_error.yaml")
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.errors == info.value.errors
    assert str(copy) == str(info.value)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"pack: ok\npersonas:\n  - id: caf\xe9\n", 3, "not valid UTF-8"),
        (b"pack: ok\ndescription: 'bell \x07'\n", 2, "YAML error: character #x0007 is not allowed"),
        (b"pack: !!python/object:os.system ok\n", 1, "YAML error: could not determine a constructor"),
    ],
)
def test_undecodable_or_unsafe_content(tmp_path: Path, content: bytes, line: int, message: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    [error] = errors_of(path)
    assert error.line == line
    assert error.message.startswith(message)
