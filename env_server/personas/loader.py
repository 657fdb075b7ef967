"""Load persona packs from YAML and report every problem with its file, line and field.

A pack file is parsed once: PyYAML composes the node tree (which keeps line marks), the loader checks
that tree for duplicate keys and duplicate persona ids, then constructs the data from the same nodes
and validates it with :class:`~env_server.personas.schema.Pack`. Each pydantic error's ``loc`` is
walked down the node tree to find its line:

* a field that is present points at the line of its key (a list item at the line of the item);
* a missing field points at the first line of the mapping that should hold it;
* an unknown field points at the line of the unknown key.

Field paths use 0-based list indexes, as pydantic does, and name the persona when its id is known:
``personas[1] (id=maya).reactions.high``.

Errors::

    PackValidationError(errors=[PackError(file, line, field, message), ...])
"""

from __future__ import annotations

import difflib
import random
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from attune_client.wire import PersonaPublic
from env_server.personas.schema import Pack, Persona

__all__ = [
    "LoadedPack",
    "PackError",
    "PackValidationError",
    "PersonaCatalog",
    "discover_pack_files",
    "load_pack",
    "pack_json_schema",
    "read_pack",
]

_PACK_SUFFIXES = (".yaml", ".yml")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_SHOWN = 60


@dataclass(frozen=True)
class PackError:
    """One problem in a pack file.

    Attributes:
        file: Path of the pack file, as given.
        line: 1-based line of the problem, or None when no line applies (an unreadable file).
        field: Dotted path of the field, e.g. ``personas[3] (id=maya).reactions.high``; empty for
            problems with the whole file.
        message: What is wrong, for a persona author.
    """

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        """``FILE:LINE: FIELD: MESSAGE``; the line and field are left out when there is none."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PackValidationError(Exception):
    """One or more pack files are invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: Sequence[PackError]) -> None:
        """Keep the errors; the message lists them one a line."""
        self.errors: list[PackError] = list(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in persona packs:\n{lines}")

    def __reduce__(self) -> tuple[type[PackValidationError], tuple[list[PackError]]]:
        """Pickle with the errors (the default would pass the message as ``errors``)."""
        return type(self), (self.errors,)


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack with where it came from.

    Attributes:
        path: The file it was read from.
        pack: The validated pack.
        id_lines: Line of each persona's ``id`` in the file, by persona id.
    """

    path: Path
    pack: Pack
    id_lines: Mapping[str, int]


def load_pack(path: str | Path) -> Pack:
    """Read and validate one pack file.

    Args:
        path: The YAML file.

    Returns:
        The validated pack.

    Raises:
        PackValidationError: With every problem found: unreadable file, YAML syntax, duplicate keys,
            duplicate persona ids, and each schema error.
    """
    return read_pack(path).pack


def read_pack(path: str | Path) -> LoadedPack:
    """Like :func:`load_pack`, also returning the file and the line of each persona id."""
    path = Path(path)
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PackValidationError([PackError(file, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PackValidationError([PackError(file, line, "", f"not valid UTF-8: {exc.reason}")]) from exc

    try:
        yaml_loader = yaml.SafeLoader(text)  # checks for characters YAML does not allow
    except yaml.YAMLError as exc:
        raise PackValidationError([_yaml_error(file, text, exc)]) from exc
    try:
        root = yaml_loader.get_single_node()
        if root is None:
            raise PackValidationError([PackError(file, 1, "", "file is empty; a pack needs 'pack' and 'personas'")])
        if not isinstance(root, MappingNode):
            message = f"top level must be a mapping with 'pack' and 'personas', not a {_kind(root)}"
            raise PackValidationError([PackError(file, _line(root), "", message)])
        doc = _Document(file, root)
        # Checked before construction: constructing flattens merge keys (<<) into the node tree.
        id_errors = doc.duplicate_ids()
        errors = doc.duplicate_keys() + id_errors
        data = yaml_loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise PackValidationError([_yaml_error(file, text, exc)]) from exc
    finally:
        yaml_loader.dispose()

    try:
        pack = Pack.model_validate(data)
    except ValidationError as exc:
        errors += [
            doc.schema_error(detail)
            for detail in exc.errors()
            # The schema's own duplicate-id check only runs when every persona is valid; ours always does.
            if not (id_errors and detail["loc"] == ("personas",) and "duplicate persona id" in detail["msg"])
        ]
    if errors:
        raise PackValidationError(sorted(errors, key=lambda e: (e.line or 0, e.field)))
    return LoadedPack(path=path, pack=pack, id_lines=doc.id_lines())


def discover_pack_files(path: str | Path) -> list[Path]:
    """The pack files at a path.

    Args:
        path: A file (returned as is, whatever its suffix) or a folder. A folder gives its ``*.yaml`` and
            ``*.yml`` files, sorted by name, not recursing into subfolders and skipping hidden files.

    Raises:
        FileNotFoundError: The path does not exist.
    """
    path = Path(path)
    if path.is_dir():
        return sorted(
            p for p in path.iterdir() if p.suffix in _PACK_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
    if path.exists():
        return [path]
    raise FileNotFoundError(f"no such file or directory: {path}")


def pack_json_schema() -> dict[str, Any]:
    """JSON Schema of a pack file, for editors (e.g. the YAML language server's ``$schema`` comment)."""
    schema = Pack.model_json_schema()
    schema.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Attune persona pack",
        **schema,
    }


class PersonaCatalog:
    """The personas of one or more packs, by id; ids are unique across packs."""

    def __init__(self, personas: Mapping[str, Persona], packs: Mapping[str, str]) -> None:
        """Build from personas by id and the pack name of each id; prefer :meth:`load`."""
        self._personas = dict(sorted(personas.items()))
        self._packs = dict(packs)
        self._ids = tuple(self._personas)

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> PersonaCatalog:
        """Load every pack at the given paths (files or folders, see :func:`discover_pack_files`).

        Raises:
            PackValidationError: With the errors of every file, a path that does not exist or a folder
                without packs, persona ids defined in more than one file, and no paths at all (a server
                with no personas cannot start an episode).
        """
        if not paths:
            raise PackValidationError([PackError("(no paths)", None, "", "no persona pack files were given")])
        errors: list[PackError] = []
        loaded: list[LoadedPack] = []
        for path in paths:
            try:
                files = discover_pack_files(path)
            except FileNotFoundError:
                errors.append(PackError(str(path), None, "", "no such file or directory"))
                continue
            if not files:
                errors.append(PackError(str(path), None, "", "no *.yaml or *.yml pack files in this folder"))
            for file in files:
                try:
                    loaded.append(read_pack(file))
                except PackValidationError as exc:
                    errors.extend(exc.errors)
        try:
            catalog = cls.from_packs(loaded)
        except PackValidationError as exc:
            errors.extend(exc.errors)
        if errors:
            raise PackValidationError(errors)
        return catalog

    @classmethod
    def from_packs(cls, packs: Sequence[LoadedPack]) -> PersonaCatalog:
        """Combine loaded packs.

        Raises:
            PackValidationError: A persona id is defined in more than one file; each later definition is
                reported at its line, naming the file and line of the first.
        """
        personas: dict[str, Persona] = {}
        pack_names: dict[str, str] = {}
        first_seen: dict[str, tuple[str, int | None]] = {}
        errors: list[PackError] = []
        seen_files: set[Path] = set()
        for loaded in packs:
            resolved = loaded.path.resolve()
            if resolved in seen_files:
                continue  # the same file given twice is not a conflict with itself
            seen_files.add(resolved)
            for index, persona in enumerate(loaded.pack.personas):
                line = loaded.id_lines.get(persona.id)
                if persona.id in first_seen:
                    other_file, other_line = first_seen[persona.id]
                    other = other_file if other_line is None else f"{other_file}:{other_line}"
                    errors.append(
                        PackError(
                            str(loaded.path),
                            line,
                            f"personas[{index}] (id={persona.id}).id",
                            f"duplicate persona id {persona.id!r}: also defined in {other}",
                        )
                    )
                    continue
                first_seen[persona.id] = (str(loaded.path), line)
                personas[persona.id] = persona
                pack_names[persona.id] = loaded.pack.pack
        if errors:
            raise PackValidationError(errors)
        return cls(personas, pack_names)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every persona id, sorted."""
        return self._ids

    def get(self, persona_id: str) -> Persona:
        """The persona with this id.

        Raises:
            KeyError: No such persona.
        """
        try:
            return self._personas[persona_id]
        except KeyError:
            raise KeyError(persona_id) from None

    def pack_of(self, persona_id: str) -> str:
        """Name of the pack the persona comes from.

        Raises:
            KeyError: No such persona.
        """
        try:
            return self._packs[persona_id]
        except KeyError:
            raise KeyError(persona_id) from None

    def public(self) -> list[PersonaPublic]:
        """What anyone may see of each persona, sorted by id."""
        return [persona.public(self._packs[persona_id]) for persona_id, persona in self._personas.items()]

    def choose(self, seed: int | None = None) -> Persona:
        """Pick a persona: the same one for the same seed and catalog, a random one for ``None``.

        The pick is ``random.Random(seed).randrange(len(self))`` over the sorted ids, which is stable
        across processes and Python versions (unlike ``hash()``).

        Raises:
            LookupError: The catalog is empty.
        """
        if not self._ids:
            raise LookupError("the persona catalog is empty")
        return self._personas[self._ids[random.Random(seed).randrange(len(self._ids))]]

    def __contains__(self, persona_id: object) -> bool:
        """Whether a persona has this id."""
        return persona_id in self._personas

    def __len__(self) -> int:
        """Number of personas."""
        return len(self._ids)

    def __iter__(self) -> Iterator[Persona]:
        """The personas, sorted by id."""
        return iter(self._personas.values())

    def __repr__(self) -> str:
        """Size and packs, not the private persona text."""
        return f"PersonaCatalog({len(self)} personas from packs {sorted(set(self._packs.values()))})"


class _Document:
    """The node tree of one pack file, for finding the line and field path of a problem."""

    def __init__(self, file: str, root: MappingNode) -> None:
        self.file = file
        self.root = root
        self._keys = yaml.constructor.SafeConstructor()

    def key_value(self, node: Node) -> Any:
        """The Python value of a scalar mapping key (``on:`` is True in YAML 1.1); None for others."""
        if not isinstance(node, ScalarNode):
            return None
        try:
            value = self._keys.construct_object(node)
        except yaml.YAMLError:
            return node.value
        return value if _hashable(value) else node.value

    def lookup(self, mapping: MappingNode, key: object) -> tuple[Node, Node] | None:
        """The (key, value) nodes of ``key``; the last one wins, as when PyYAML constructs the mapping."""
        found = None
        for key_node, value_node in mapping.value:
            if key_node.tag != _MERGE_TAG and self.key_value(key_node) == key and _hashable(key):
                found = (key_node, value_node)
        return found

    def personas_node(self) -> SequenceNode | None:
        pair = self.lookup(self.root, "personas")
        return pair[1] if pair and isinstance(pair[1], SequenceNode) else None

    def persona_id(self, index: int) -> str | None:
        """The id written for ``personas[index]``, as text, when there is one."""
        personas = self.personas_node()
        item = personas.value[index] if personas is not None and 0 <= index < len(personas.value) else None
        pair = self.lookup(item, "id") if isinstance(item, MappingNode) else None
        if pair is None or not isinstance(pair[1], ScalarNode) or not pair[1].value.strip():
            return None
        return pair[1].value.strip()

    def field_path(self, loc: Sequence[Any]) -> str:
        """``("personas", 1, "reactions")`` -> ``personas[1] (id=maya).reactions``; ints are list indexes."""
        out = ""
        for position, element in enumerate(loc):
            if isinstance(element, int) and not isinstance(element, bool):
                out += f"[{element}]"
                if position == 1 and loc[0] == "personas":
                    persona_id = self.persona_id(element)
                    out += f" (id={persona_id})" if persona_id else ""
            else:
                out += f".{element}" if out else str(element)
        return out

    def locate(self, loc: Sequence[Any]) -> tuple[int, list[Any], Node | None]:
        """Walk ``loc`` down the tree: (line, the loc elements that are data keys/indexes, final node).

        Elements that cannot apply to the node reached (pydantic's union member tags below a scalar)
        are dropped from the path. The final node is None when the last element is missing.
        """
        node: Node = self.root
        line = _line(node)
        path: list[Any] = []
        for element in loc:
            if isinstance(node, MappingNode):
                path.append(str(element))
                pair = self.lookup(node, element)
                if pair is None:
                    return _line(node), path, None
                line, node = _line(pair[0]), pair[1]
            elif isinstance(node, SequenceNode) and isinstance(element, int):
                path.append(element)
                if not 0 <= element < len(node.value):
                    return _line(node), path, None
                node = node.value[element]
                line = _line(node)
        return line, path, node

    def schema_error(self, detail: Mapping[str, Any]) -> PackError:
        """A pydantic error detail as a PackError at its line."""
        line, path, node = self.locate(detail["loc"])
        kind = detail["type"]
        name = path[-1] if path else ""
        if kind == "missing":
            message = f"required field {name!r} is missing"
        elif kind == "extra_forbidden":
            model = _model_at(path[:-1])
            message = f"unknown field {name!r}" + _suggest(name, list(model.model_fields) if model else [])
        else:
            message = detail["msg"].removeprefix("Value error, ")
            value = detail.get("input")
            if isinstance(value, (str, int, float, bool)) or value is None:
                shown = repr(value)
                message += f" (got {shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + '...'})"
            if kind == "string_pattern_mismatch":
                model = _model_at(path[:-1])
                info = model.model_fields.get(name) if model else None
                message += f"; hint: {info.description}" if info and info.description else ""
            if kind == "string_type" and isinstance(node, ScalarNode) and node.style is None:
                message += f"; YAML reads unquoted {node.value} as {type(value).__name__}, quote it to keep it text"
        return PackError(self.file, line, self.field_path(path), message)

    def duplicate_keys(self) -> list[PackError]:
        """Every key that repeats in its mapping (PyYAML would silently keep the last value)."""
        errors: list[PackError] = []
        visited: set[int] = set()

        def walk(node: Node, path: list[Any]) -> None:
            if id(node) in visited:
                return  # an alias to a node already checked (possibly recursive)
            visited.add(id(node))
            if isinstance(node, SequenceNode):
                for index, item in enumerate(node.value):
                    walk(item, [*path, index])
            elif isinstance(node, MappingNode):
                first: dict[Any, int] = {}
                for key_node, value_node in node.value:
                    if key_node.tag == _MERGE_TAG:
                        continue
                    key = self.key_value(key_node)
                    if key is not None and _hashable(key):
                        if key in first:
                            errors.append(
                                PackError(
                                    self.file,
                                    _line(key_node),
                                    self.field_path([*path, str(key)]),
                                    f"duplicate key {key!r} (first at line {first[key]}); "
                                    "YAML would keep only this last value",
                                )
                            )
                        else:
                            first[key] = _line(key_node)
                    walk(value_node, [*path, str(key if key is not None else key_node.value)])

        walk(self.root, [])
        return errors

    def duplicate_ids(self) -> list[PackError]:
        """Every persona id used a second time in this file, at the line of the repeat."""
        errors: list[PackError] = []
        first: dict[str, tuple[int, int]] = {}
        for index, line in self._id_entries():
            persona_id = self.persona_id(index)
            if persona_id in first:
                other_index, other_line = first[persona_id]
                errors.append(
                    PackError(
                        self.file,
                        line,
                        self.field_path(["personas", index, "id"]),
                        f"duplicate persona id {persona_id!r} (first at line {other_line}, personas[{other_index}])",
                    )
                )
            elif persona_id is not None:
                first[persona_id] = (index, line)
        return errors

    def id_lines(self) -> dict[str, int]:
        """Line of the ``id`` key of each persona, by id."""
        lines: dict[str, int] = {}
        for index, line in self._id_entries():
            persona_id = self.persona_id(index)
            if persona_id is not None:
                lines.setdefault(persona_id, line)
        return lines

    def _id_entries(self) -> Iterator[tuple[int, int]]:
        personas = self.personas_node()
        for index, item in enumerate(personas.value if personas else []):
            pair = self.lookup(item, "id") if isinstance(item, MappingNode) else None
            if pair is not None:
                yield index, _line(pair[0])


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _kind(node: Node) -> str:
    return {ScalarNode: "scalar", SequenceNode: "list", MappingNode: "mapping"}.get(type(node), "node")


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _yaml_error(file: str, text: str, exc: yaml.YAMLError) -> PackError:
    """A YAML syntax or construction error at its problem line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = "; ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        return PackError(file, mark.line + 1 if mark else None, "", f"YAML error: {message}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        return PackError(file, line, "", f"YAML error: character #x{exc.character:04x} is not allowed")
    return PackError(file, None, "", f"YAML error: {exc}")


def _model_at(path: Sequence[Any]) -> type[BaseModel] | None:
    """The schema model found at a data path (``["personas", 0]`` -> Persona), or None."""
    annotation: Any = Pack
    for element in path:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = annotation.model_fields.get(element) if isinstance(element, str) else None
            if info is None:
                return None
            annotation = _strip_optional(info.annotation)
        elif get_origin(annotation) is list and isinstance(element, int):
            annotation = _strip_optional(get_args(annotation)[0])
        else:
            return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _strip_optional(annotation: Any) -> Any:
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    is_union = get_origin(annotation) in (Union, types.UnionType)
    return args[0] if is_union and len(args) == 1 else annotation


def _suggest(name: object, allowed: list[str]) -> str:
    if not allowed:
        return ""
    close = difflib.get_close_matches(str(name), allowed, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
