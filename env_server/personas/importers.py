"""Import RLVER and SAGE simulated-user profiles (Tencent, 2025) as Attune persona packs.

Both projects publish JSONL profiles in Chinese with the same core fields: ``id`` (a UUID), ``player``
(who the person is), ``scene`` (the story, then how the person reacts at each emotion level and to
replies that fit or miss the hidden theme, then ``####隐藏主题:`` and the theme) and ``task`` (the
hidden theme again, as an instruction). RLVER adds ``main_cha`` and ``cha_group``; SAGE's recorded
dialogues add ``character``, ``topic`` and ``history``. The text is kept as written (only trailing
spaces on lines and CRLF line ends are normalised) and every persona gets ``language: zh``.

Mapping, per record:

* ``id``: ``rlver-`` or ``sage-`` and the first 12 hex digits of the UUID; a repeat gets ``-2``, ``-3``.
* ``name``: the ``姓名：`` line of ``player``; the persona id when there is none.
* ``profile``: ``player``. ``background``: ``scene`` up to its first reaction heading.
* ``reactions``: the scene's reaction sections, found by their headings (see :func:`parse_scene`); a
  missing one gets a generic sentence and a warning.
* ``hidden_intention``: ``task``, else the text after ``####隐藏主题:``; a record with neither is skipped.
* ``intention_type``: inferred from the hidden intention with :data:`INTENTION_KEYWORDS` (the sources
  have no such field); every persona is tagged ``intention-inferred``.
* ``opening``: ``first_talk``, else the first turn of a SAGE ``history`` when the user speaks first.
* ``initial_emotion``: that first user turn's ``emotion-point``, else 30 (RLVER) or 40 (SAGE).
* ``tags``: ``source:rlver``, ``type:<main_cha or character>``, ``trait:<each of cha_group>``.
* ``topic``: ``topic`` when it fits in 60 characters. ``difficulty``: normal.

Problems with one record (malformed JSON, a missing field) become warnings naming the input line;
only an unreadable file, or a file from which nothing could be imported, raises
:class:`ProfileImportError`.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import ValidationError

from attune_client.wire import Difficulty, IntentionType
from env_server.personas.loader import PackValidationError, read_pack
from env_server.personas.schema import Pack, Persona, Reactions

__all__ = [
    "GENERIC_REACTIONS",
    "INITIAL_EMOTION",
    "INTENTION_KEYWORDS",
    "ProfileImportError",
    "SceneParts",
    "import_command",
    "import_profiles",
    "infer_intention_type",
    "parse_scene",
    "write_pack_yaml",
]

Format = Literal["sage", "rlver"]

INITIAL_EMOTION: dict[str, int] = {"rlver": 30, "sage": 40}
"""Where each simulator starts the emotion when the record does not say."""

INTENTION_KEYWORDS: tuple[tuple[IntentionType, tuple[str, ...]], ...] = (
    (IntentionType.deep_empathy, ("共情", "共鸣")),
    (IntentionType.vent, ("宣泄", "倾诉", "发泄", "倾听", "吐槽")),
    (IntentionType.anger_acknowledged, ("愤怒", "生气", "气愤", "怒火")),
    (IntentionType.ambivalence, ("犹豫", "纠结", "要不要", "两难", "举棋不定")),
    (IntentionType.validation, ("认同", "认可", "肯定", "夸奖", "赞美", "表扬", "没有错", "没错")),
    (IntentionType.practical_advice, ("建议", "方法", "办法", "怎么办", "解决")),
    (IntentionType.understand_other, ("原因", "为什么", "动机", "分析")),
    # RLVER's "guide me to reflect on myself and grow" has no Attune type; like deep_empathy, it is
    # missed by reassurance and by advice.
    (IntentionType.deep_empathy, ("反思", "成长", "感受")),
)
"""First match wins, over the hidden intention up to a negation (``而不是`` ...). No match: deep_empathy."""

GENERIC_REACTIONS: dict[str, str] = {
    "high": "情绪较好时，语气平和放松，愿意敞开心扉多说一些。",
    "medium": "情绪一般时，有些急躁和失落，说话有所保留。",
    "low": "情绪低落时，言语激动或消沉，可能不想再聊下去。",
    "fit": "对方的回复贴合自己真正的需求时，情绪上升，更愿意继续倾诉。",
    "miss": "对方的回复偏离自己真正的需求时，情绪下降，变得失望或冷淡。",
}
"""Used for a reaction section the scene lacks."""

_REACTION_KEYS = ("high", "medium", "low", "fit", "miss")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")
_HIDDEN_MARKER = re.compile(r"^[ \t]*#{1,6}[ \t]*隐藏主题[ \t]*[:：]", re.MULTILINE)
_NAME = re.compile(r"姓名\**[ \t]*[:：][ \t]*\**[ \t]*([^\n*]+)")
_NEGATION = re.compile(r"而不是|而非|(?<!要)不要|不想要|不需要")  # not the 不要 of 要不要
_BULLET = re.compile(r"^(?:[-+•]\s+|\*\s+|\d+\s*[.、)）]\s*)")
_EMPHASIS = re.compile(r"^(\*{1,3}|_{1,2})(?P<label>[^*_\n]+?)\1(?P<rest>.*)$")
_REPLY_WORDS = re.compile(r"NPC|回复|回应|答复|主题", re.IGNORECASE)
_EMO = r"(?:emotion|情绪)"
_LEVELS = {
    "high": re.compile(rf"{_EMO}\s*(?:状态)?\s*(?:较|很|非常|比较)?高|高\s*的?\s*{_EMO}", re.IGNORECASE),
    "low": re.compile(rf"{_EMO}\s*(?:状态)?\s*(?:较|很|非常|比较)?低|低\s*的?\s*{_EMO}", re.IGNORECASE),
    "medium": re.compile(
        rf"{_EMO}\s*(?:状态)?\s*(?:一般|中等|中度|适中|平稳|平静)|(?:一般|中等|中度|适中)\s*的?\s*{_EMO}", re.IGNORECASE
    ),
}
_GROUP = re.compile(r"反应|影响")
_GROUP_SUBJECT = re.compile(r"emotion|情绪|状态|NPC|回复|角色|玩家|隐藏主题", re.IGNORECASE)
_EPILOGUE = re.compile(r"^(?:通过|如此|总之|总的来说|综上|这个背景故事|这样的)")
_MAX_LABEL = 40
_MAX_TOPIC = 60
_MAX_NAME = 80


class ProfileImportError(Exception):
    """Nothing could be imported: the file is unreadable, or no record in it was usable."""


@dataclass
class SceneParts:
    """A ``scene`` split into its parts.

    Attributes:
        background: The story before the first reaction heading (plus a closing summary paragraph
            found after the last reaction, if any).
        reactions: The text of each reaction section found, by ``high``/``medium``/``low``/``fit``/``miss``.
        hidden: The text after the ``####隐藏主题:`` marker, or None when there is no marker.
    """

    background: str
    reactions: dict[str, str] = field(default_factory=dict)
    hidden: str | None = None


def parse_scene(scene: str) -> SceneParts:
    """Split a RLVER/SAGE ``scene`` into background, reaction sections and hidden theme.

    The scene's layout varies from record to record (``## 角色不同emotion下的反应``, ``**玩家不同状态下可能
    的反应**``, ``### 角色反应`` ...), so it is read line by line. A line's *label* is its heading text, its
    leading ``**bold**`` or ``*italic*`` part after any list marker, or, for a plain line, the text before a
    colon. A label starts a reaction section when it names a reply that fits (``贴合``, ``正面回复``) or
    misses (``偏离``, ``负面回复``) the hidden theme, or an emotion level (``emotion高时``, ``高emotion时``,
    ``低情绪状态``, ``情绪一般``); the text after the label and the lines below it, up to the next section,
    are the section. A label with nothing after it that names reactions or effects (``反应``, ``影响``) of
    emotion, states or replies is a group heading. The background ends at the first section or group
    heading. A closing paragraph after the last section that sums up (``通过这次与NPC的倾诉…``) goes back
    to the background.
    """
    text = _clean(scene)
    hidden = None
    markers = list(_HIDDEN_MARKER.finditer(text))
    if markers:
        hidden = _strip_stars(text[markers[-1].end() :]) or None
        text = text[: markers[-1].start()]

    background: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = background
    last: list[str] | None = None
    for line in text.split("\n"):
        kind, rest = _classify(line)
        if kind is None:
            if current is not None:
                current.append(line)
            continue
        if kind == "group":
            current = None
            continue
        current = sections.setdefault(kind, [])
        if current:
            current.append("")
        if rest:
            current.append(rest)
        last = current

    epilogue = _split_epilogue(last) if last is not None else []
    story = _join(background)
    if epilogue:
        story = _join([story, "", *epilogue])
    reactions = {key: body for key in _REACTION_KEYS if (body := _join(sections.get(key, [])))}
    return SceneParts(background=story, reactions=reactions, hidden=hidden)


def infer_intention_type(hidden_intention: str) -> IntentionType | None:
    """The intention type whose keywords (see :data:`INTENTION_KEYWORDS`) the hidden intention names.

    Only the text before a negation counts: ``深刻共情你的感受，而不是简单的安慰`` is about empathy, not
    reassurance. Returns None when no keyword matches.
    """
    wanted = _NEGATION.split(hidden_intention, maxsplit=1)[0]
    for intention_type, keywords in INTENTION_KEYWORDS:
        if any(keyword in wanted for keyword in keywords):
            return intention_type
    return None


def import_profiles(path: str | Path, fmt: Format, *, pack_name: str | None = None) -> tuple[Pack, list[str]]:
    """Read a RLVER or SAGE profile JSONL file as a persona pack.

    Blank lines, a UTF-8 BOM, CRLF line ends and unknown fields are accepted. A line that is not a JSON
    object, or a record without ``player``, ``scene`` or a hidden intention, is skipped with a warning.

    Args:
        path: The JSONL file.
        fmt: ``"rlver"`` or ``"sage"``: the id prefix, default initial emotion and source tag.
        pack_name: Name of the pack; ``<fmt>-<file stem>`` when not given.

    Returns:
        The pack and the warnings, each ``FILE:LINE: message``.

    Raises:
        ProfileImportError: Unknown format, invalid pack name, unreadable file, or no usable record.
    """
    if fmt not in INITIAL_EMOTION:
        raise ProfileImportError(f"unknown format {fmt!r}; expected one of: {', '.join(INITIAL_EMOTION)}")
    path = Path(path)
    name = pack_name if pack_name is not None else _slug(f"{fmt}-{path.stem}", fallback=f"{fmt}-import")
    if not _ID_PATTERN.match(name):
        raise ProfileImportError(f"invalid pack name {name!r}: use lowercase letters, digits, '-' and '_'")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ProfileImportError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ProfileImportError(f"{path}: not valid UTF-8: {exc.reason}") from exc

    warnings: list[str] = []
    personas: list[Persona] = []
    used_ids: set[str] = set()
    records = sum(1 for line in text.splitlines() if line.strip())
    for lineno, record in _records(text, path, warnings):
        note = _Notes(path, lineno, warnings)
        persona = _persona(record, fmt, lineno, used_ids, note)
        if persona is not None:
            used_ids.add(persona.id)
            personas.append(persona)
    if not personas:
        reason = f"none of its {records} line(s) could be imported" if records else "it has no records"
        details = "".join(f"\n  {warning}" for warning in warnings)
        raise ProfileImportError(f"{path}: no personas imported: {reason}{details}")
    pack = Pack(
        pack=name,
        language="zh",
        description=f"Imported from {fmt.upper()} profiles in {path.name} by 'attune personas import'.",
        personas=personas,
    )
    return pack, warnings


def write_pack_yaml(pack: Pack, out_path: str | Path, *, comment: str | None = None) -> Path:
    """Write a pack as YAML that :func:`~env_server.personas.loader.load_pack` reads back unchanged.

    Multi-line text is written in block style (``|-``), keys in schema order, Unicode as is; fields
    that are None and an empty ``false_beliefs`` are left out.

    Args:
        pack: The pack.
        out_path: The file to write (replaced if it exists).
        comment: A line to put at the top as a YAML comment.

    Returns:
        The path written.
    """
    data = pack.model_dump(mode="json", exclude_none=True)
    for persona in data["personas"]:
        if not persona.get("false_beliefs"):
            persona.pop("false_beliefs", None)
    body = yaml.dump(
        data, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=1_000_000, default_flow_style=False
    )
    header = "".join(f"# {line}\n" for line in comment.splitlines()) if comment else ""
    out_path = Path(out_path)
    out_path.write_text(header + body, encoding="utf-8")
    return out_path


def import_command(
    fmt: str, in_path: str | Path, out_path: str | Path, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``attune personas import --format sage|rlver IN.jsonl -o OUT.yaml``.

    Writes the pack, checks that the written file loads, prints each warning to ``err`` and a one-line
    summary to ``out``.

    Returns:
        0 when a pack was written (warnings or not), 1 when nothing could be imported or written.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pack, warnings = import_profiles(in_path, fmt)  # type: ignore[arg-type]
    except ProfileImportError as exc:
        print(f"error: {exc}", file=err)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    try:
        write_pack_yaml(pack, out_path, comment=f"Generated by: attune personas import --format {fmt} {in_path}")
        read_pack(out_path)
    except OSError as exc:
        print(f"error: {out_path}: cannot write file: {exc.strerror or exc}", file=err)
        return 1
    except PackValidationError as exc:  # a bug in the writer, not in the input
        print(f"error: the written pack does not load: {exc}", file=err)
        return 1
    print(
        f"Imported {len(pack.personas)} personas from {in_path} ({fmt}) into {out_path} "
        f"(pack {pack.pack}); {len(warnings)} warning(s)",
        file=out,
    )
    return 0


@dataclass
class _Notes:
    path: Path
    lineno: int
    warnings: list[str]

    def __call__(self, message: str) -> None:
        self.warnings.append(f"{self.path}:{self.lineno}: {message}")


def _records(text: str, path: Path, warnings: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each JSON object in the file with its 1-based line; bad lines become warnings."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            warnings.append(f"{path}:{lineno}: skipped: malformed JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(record, dict):
            warnings.append(f"{path}:{lineno}: skipped: a record must be a JSON object, not {type(record).__name__}")
            continue
        yield lineno, record


def _persona(record: dict[str, Any], fmt: str, lineno: int, used_ids: set[str], note: _Notes) -> Persona | None:
    persona_id = _persona_id(record.get("id"), fmt, lineno, used_ids, note)
    player = _text(record, "player", note)
    scene = _text(record, "scene", note)
    missing = [key for key, value in (("player", player), ("scene", scene)) if not value]
    if missing:
        note(f"skipped {persona_id}: no {' or '.join(repr(key) for key in missing)}")
        return None
    assert player is not None and scene is not None
    parts = parse_scene(scene)

    task = _text(record, "task", note)
    hidden = task or parts.hidden
    if not hidden:
        note(f"skipped {persona_id}: no hidden intention (neither 'task' nor '####隐藏主题:' in 'scene')")
        return None
    if task and parts.hidden and _squash(task) != _squash(parts.hidden):
        note(f"{persona_id}: 'task' and the scene's ####隐藏主题 differ; used 'task'")

    background = parts.background
    if not background:
        note(f"{persona_id}: no background before the reaction sections; used the whole scene")
        background = _clean(scene)
    reactions = {}
    for key in _REACTION_KEYS:
        if key in parts.reactions:
            reactions[key] = parts.reactions[key]
        else:
            reactions[key] = GENERIC_REACTIONS[key]
            note(f"{persona_id}: no '{key}' reaction section in 'scene'; used a generic sentence")

    intention_type = infer_intention_type(hidden)
    if intention_type is None:
        intention_type = IntentionType.deep_empathy
        note(f"{persona_id}: no intention keyword in {hidden!r}; intention_type set to deep_empathy")

    name = _name(player)
    if name is None:
        note(f"{persona_id}: no '姓名：' line in 'player'; the name is the persona id")
    opening, first_emotion = _first_turn(record)
    topic = _text(record, "topic", note)
    if topic and len(topic) > _MAX_TOPIC:
        note(f"{persona_id}: 'topic' is longer than {_MAX_TOPIC} characters; left out")
        topic = None

    try:
        return Persona(
            id=persona_id,
            name=name or persona_id,
            profile=player,
            background=background,
            hidden_intention=hidden,
            intention_type=intention_type,
            topic=topic or None,
            reactions=Reactions(**reactions),
            opening=_text(record, "first_talk", note) or opening,
            initial_emotion=_initial_emotion(first_emotion, fmt, note, persona_id),
            difficulty=Difficulty.normal,
            language="zh",
            tags=_tags(record, fmt, note, persona_id),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        note(f"skipped {persona_id}: {problems}")
        return None


def _persona_id(raw: object, fmt: str, lineno: int, used: set[str], note: _Notes) -> str:
    text = str(raw).strip().lower() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    digits = re.sub(r"[^0-9a-f]", "", text)
    if re.fullmatch(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", text):
        base = f"{fmt}-{digits[:12]}"
    else:
        slug = _slug(text, fallback="")[: 63 - len(fmt)]
        base = f"{fmt}-{slug}" if slug else f"{fmt}-line{lineno}"
        if not slug:
            note(f"no usable 'id'; the persona id is {base}")
    persona_id, n = base, 2
    while persona_id in used:
        persona_id = f"{base[:60]}-{n}"
        n += 1
    if persona_id != base:
        note(f"persona id {base} is already used; this record is {persona_id}")
    return persona_id


def _text(record: dict[str, Any], key: str, note: _Notes) -> str | None:
    """The field as cleaned text; None when absent, null or empty (a non-text value is noted)."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        note(f"'{key}' is a {type(value).__name__}, not text; ignored")
        return None
    return _clean(value) or None


def _name(player: str) -> str | None:
    match = _NAME.search(player)
    name = match.group(1).strip() if match else ""
    return name[:_MAX_NAME] or None


def _first_turn(record: dict[str, Any]) -> tuple[str | None, object]:
    """The opening line and emotion-point of a SAGE history whose first turn is the user's."""
    history = record.get("history")
    if not isinstance(history, list) or not history:
        return None, None
    first = history[0]
    if not isinstance(first, dict) or first.get("role") != "user":
        return None, None
    content = first.get("content")
    opening = _clean(content) if isinstance(content, str) else None
    return opening or None, first.get("emotion-point")


def _initial_emotion(value: object, fmt: str, note: _Notes, persona_id: str) -> int:
    default = INITIAL_EMOTION[fmt]
    if value is None:
        return default
    try:
        number = round(float(str(value).strip()))
    except ValueError:
        note(f"{persona_id}: emotion-point {value!r} is not a number; initial_emotion {default}")
        return default
    if not 10 <= number <= 99:
        clamped = min(max(number, 10), 99)
        note(f"{persona_id}: emotion-point {number} is outside 10..99; initial_emotion {clamped}")
        return clamped
    return number


def _tags(record: dict[str, Any], fmt: str, note: _Notes, persona_id: str) -> list[str]:
    tags = [f"source:{fmt}"]
    for key in ("main_cha", "character"):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            tags.append(f"type:{value.strip()}")
    tags += [f"trait:{trait}" for trait in _traits(record.get("cha_group"), note, persona_id)]
    tags.append("intention-inferred")
    return list(dict.fromkeys(tags))


def _traits(value: object, note: _Notes, persona_id: str) -> list[str]:
    """``cha_group`` as a list of traits: a JSON list, a Python-repr list string, or ``a, b、c``."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                value = ast.literal_eval(text)  # literals only: never runs code
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = re.sub(r"[\[\]()'\"]", " ", text)
        if isinstance(value, str):
            value = re.split(r"[,，、;；/|\s]+", value)
    if not isinstance(value, (list, tuple)):
        note(f"{persona_id}: 'cha_group' is a {type(value).__name__}, not a list of traits; ignored")
        return []
    traits = [str(item).strip() for item in value if isinstance(item, (str, int)) and str(item).strip()]
    return list(dict.fromkeys(traits))


def _classify(line: str) -> tuple[str | None, str]:
    """(section kind, text after the label) of a scene line; kind is None for a plain content line."""
    labelled = _label(line)
    if labelled is None:
        return None, ""
    label, rest = labelled
    if len(label) > _MAX_LABEL:
        return None, ""
    if _REPLY_WORDS.search(label):
        if re.search(r"偏离|不贴合|不符合|背离|负面", label):
            return "miss", rest
        if re.search(r"贴合|契合|符合|正面", label):
            return "fit", rest
    for key, pattern in _LEVELS.items():
        if pattern.search(label):
            return key, rest
    if not rest and _GROUP.search(label) and _GROUP_SUBJECT.search(label):
        return "group", ""
    return None, ""


def _label(line: str) -> tuple[str, str] | None:
    """(label, rest) of a heading, a line led by emphasis, or a ``label：text`` line; None otherwise."""
    text = line.strip()
    heading = text.startswith("#")
    text = text.lstrip("#").strip() if heading else _BULLET.sub("", text, count=1)
    emphasis = _EMPHASIS.match(text)
    if emphasis:
        label, rest = emphasis.group("label"), emphasis.group("rest")
    elif heading:
        label, _, rest = text.partition("：") if "：" in text else text.partition(":")
    else:
        match = re.match(r"^([^:：]{1,30})[:：](.*)$", text)
        if not match:
            return None
        label, rest = match.groups()
    label = label.strip().strip("*").strip().rstrip(":：").strip()
    rest = rest.strip().lstrip(":：").strip()
    return (label, rest) if label else None


def _split_epilogue(lines: list[str]) -> list[str]:
    """Remove and return closing summary paragraphs (``通过…``) from the end of the last section."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    moved: list[list[str]] = []
    while len(paragraphs) > 1:
        first = paragraphs[-1][0]
        if first[:1].isspace() or _BULLET.match(first) or not _EPILOGUE.match(first):
            break
        moved.insert(0, paragraphs.pop())
    if not moved:
        return []
    lines[:] = [line for p in paragraphs for line in [*p, ""]]
    return [line for p in moved for line in [*p, ""]]


def _clean(text: str) -> str:
    """CRLF to LF, trailing spaces off each line, blank lines at the ends off."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n").strip()


def _join(lines: list[str]) -> str:
    """Lines as one text, without blank lines at the ends or runs of more than one blank line."""
    text = _clean(textwrap.dedent("\n".join(lines)))
    return re.sub(r"\n{3,}", "\n\n", text)


def _strip_stars(text: str) -> str:
    return _clean("\n".join(line.strip().strip("*").strip() for line in text.split("\n")))


def _squash(text: str) -> str:
    return re.sub(r"[\s*]", "", text)


def _slug(text: str, *, fallback: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64].rstrip("-_")
    return slug if _ID_PATTERN.match(slug) else fallback


class _BlockDumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)
