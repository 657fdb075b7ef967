"""Scoring a recorded dialogue: the sentient agent appraises each supporter turn of a transcript.

The dialogue is teacher-forced: every recorded message is kept as written, and for each supporter
(``assistant``) message the simulator appraises that reply given the history up to and including it and
the emotion it has reached so far, exactly as a live step does (same :class:`TurnContext`, the seed
``turn_seed(seed, turn, "appraise")``, the delta clamped to [-10, 10], the emotion kept in 0..100). No reply
is generated and no episode is created. Unlike a live episode the walk does not stop at emotion 100 or
below 10: the recording goes on, so the appraisal does too.

Each turn reports the change (the one actually applied, so ``emotions`` is the running sum), our emotion
after it, the reward components under a :class:`RewardSpec`, and the emotion the recording gives after it:
the ``emotion`` of the next user message, when there is one. When the recording has emotions, the
dialogue's :class:`Correlation` compares ours with theirs over the turns where both exist.

Files: :func:`read_attune_file` reads :class:`ScoreRequest` JSONL or an exported episode;
:func:`read_sage_file` reads SAGE's recorded dialogues, turning each record into a persona with the
profile importer. :func:`score_command` is ``attune score``.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any, NamedTuple, TextIO

from prometheus_client import Histogram
from pydantic import ValidationError

from attune_client.wire import (
    Correlation,
    EpisodeInternals,
    EpisodeView,
    RewardMode,
    RewardSpec,
    Role,
    ScoredMessage,
    ScoredTurn,
    ScoreRequest,
    ScoreResponse,
)
from env_server.agent.emotion import apply_delta, clamp_delta
from env_server.agent.episode import turn_seed
from env_server.agent.reward import step_components
from env_server.errors import AttuneServerError, InvalidRequest, PersonaNotFound
from env_server.llm.protocol import Simulator, Turn, TurnContext

# The importer's one-record conversion is reused as is, so a scored SAGE persona is the imported one.
from env_server.personas.importers import _Notes, _persona, _records
from env_server.personas.loader import PackValidationError, PersonaCatalog
from env_server.personas.schema import Persona
from env_server.service import backend_boundary
from env_server.settings import Settings

__all__ = [
    "DENSE",
    "MAX_SCORED_TURNS",
    "SageDialogue",
    "TranscriptFileError",
    "check_messages",
    "correlation",
    "find_persona",
    "overall_correlation",
    "pearson",
    "read_attune_file",
    "read_sage_file",
    "recorded_final",
    "score_command",
    "score_dialogue",
    "spearman",
]

DENSE = RewardSpec(mode=RewardMode.dense)
"""The default spec of :func:`score_dialogue`: every turn pays its own emotion change."""

MAX_SCORED_TURNS = 100
"""Most supporter turns one dialogue may have (the longest episode a server allows)."""


class TranscriptFileError(Exception):
    """A transcript file cannot be read or holds no usable dialogue; the message names file and line."""


class SageDialogue(NamedTuple):
    """One SAGE record: its persona (as the importer makes it), the dialogue to score, and the record id."""

    persona: Persona
    request: ScoreRequest
    record_id: str


def check_messages(messages: Sequence[ScoredMessage], *, max_chars: int | None = None, name: str = "messages") -> None:
    """Reject a dialogue that cannot be scored, naming the first offending message.

    The person speaks first and the speakers alternate (as in SAGE and in every Attune episode), so each
    supporter message answers one user message and the next user message, if any, carries the recorded
    emotion after it. Consecutive messages of one speaker should be merged before scoring.

    Raises:
        InvalidRequest: The problem, e.g. ``messages[3] is a second assistant message in a row``.
    """
    if not messages:
        raise InvalidRequest(f"{name} is empty: give the dialogue, the person's (user) message first")
    if messages[0].role is not Role.user:
        raise InvalidRequest(f"{name}[0] is an assistant message: a dialogue starts with the person's (user) message")
    for index, message in enumerate(messages):
        where = f"{name}[{index}]"
        if index and message.role is messages[index - 1].role:
            raise InvalidRequest(
                f"{where} is a second {message.role.value} message in a row: user and assistant messages must "
                "alternate (merge consecutive messages of one speaker)"
            )
        if not message.content.strip():
            raise InvalidRequest(f"{where} is blank")
        if max_chars is not None and len(message.content) > max_chars:
            raise InvalidRequest(f"{where} has {len(message.content)} characters; the limit is {max_chars}")
        if message.role is Role.assistant and message.emotion is not None:
            raise InvalidRequest(f"{where}: emotion is recorded on user messages only, not on the supporter's")
    turns = sum(message.role is Role.assistant for message in messages)
    if not turns:
        raise InvalidRequest(f"{name} has no supporter (assistant) message to score")
    if turns > MAX_SCORED_TURNS:
        raise InvalidRequest(f"{name} has {turns} supporter turns; the limit is {MAX_SCORED_TURNS}")


async def score_dialogue(
    simulator: Simulator,
    persona: Persona,
    messages: Sequence[ScoredMessage],
    *,
    initial_emotion: int | None = None,
    seed: int = 0,
    spec: RewardSpec = DENSE,
    max_chars: int | None = None,
    timer: Histogram | None = None,
) -> ScoreResponse:
    """Appraise every supporter turn of a recorded dialogue, keeping the recorded user turns.

    Args:
        simulator: The backend that appraises.
        persona: Who the simulated person is.
        messages: The dialogue, checked with :func:`check_messages`.
        initial_emotion: Emotion before the first supporter turn; the persona's when None.
        seed: Seeds the simulator's sampling, per turn as in an episode.
        spec: How each turn's reward ``total`` combines its components.
        max_chars: Longest message accepted, when given.
        timer: Observes the duration of each simulator call, when given.

    Raises:
        InvalidRequest: The messages cannot be scored.
        BackendUnavailable: The simulator failed.
    """
    check_messages(messages, max_chars=max_chars)
    emotion = persona.initial_emotion if initial_emotion is None else initial_emotion
    emotions = [emotion]
    last = max(index for index, message in enumerate(messages) if message.role is Role.assistant)
    history: list[Turn] = []
    turns: list[ScoredTurn] = []
    for index, message in enumerate(messages):
        history.append(Turn(role=message.role, content=message.content))
        if message.role is not Role.assistant:
            continue
        turn = len(turns) + 1
        context = TurnContext(
            persona=persona,
            history=tuple(history),
            emotion=emotion,
            turn=turn,
            seed=turn_seed(seed, turn, "appraise"),
        )
        async with backend_boundary(simulator.name, timer):
            appraisal = await simulator.appraise(context)
        after = apply_delta(emotion, clamp_delta(appraisal.delta))
        delta = after - emotion
        components = step_components(
            spec, persona, history[:-1], message.content, delta=delta, emotion=after, done=index == last
        )
        recorded = messages[index + 1].emotion if index + 1 < len(messages) else None
        turns.append(
            ScoredTurn(turn=turn, delta=delta, emotion=after, recorded_emotion=recorded, components=components)
        )
        emotion = after
        emotions.append(after)
    pairs = _pairs(turns)
    return ScoreResponse(
        persona_id=persona.id, emotions=emotions, turns=turns, correlation=correlation(pairs) if pairs else None
    )


def find_persona(catalog: PersonaCatalog, persona_id: str) -> Persona:
    """The catalog's persona, or PersonaNotFound."""
    try:
        return catalog.get(persona_id)
    except KeyError:
        raise PersonaNotFound(persona_id) from None


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r of paired values; None with fewer than 2 pairs or when either side is constant.

    Raises:
        ValueError: The sequences differ in length.
    """
    if len(xs) != len(ys):
        raise ValueError(f"paired values differ in length: {len(xs)} and {len(ys)}")
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    mean_x, mean_y = fmean(xs), fmean(ys)
    dx = [x - mean_x for x in xs]
    dy = [y - mean_y for y in ys]
    sxy = math.fsum(a * b for a, b in zip(dx, dy, strict=True))
    sxx, syy = math.fsum(a * a for a in dx), math.fsum(b * b for b in dy)
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks, tied values sharing their average rank; None as pearson."""
    if len(xs) != len(ys):
        raise ValueError(f"paired values differ in length: {len(xs)} and {len(ys)}")
    return pearson(_ranks(xs), _ranks(ys))


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def correlation(pairs: Sequence[tuple[int, int]]) -> Correlation:
    """Spearman and Pearson over (ours, recorded) pairs."""
    ours, theirs = [a for a, _ in pairs], [b for _, b in pairs]
    return Correlation(n=len(pairs), spearman=spearman(ours, theirs), pearson=pearson(ours, theirs))


def overall_correlation(responses: Sequence[ScoreResponse]) -> Correlation:
    """One correlation over the (ours, recorded) pairs of every turn of every dialogue, pooled."""
    return correlation([pair for response in responses for pair in _pairs(response.turns)])


def recorded_final(request: ScoreRequest) -> int | None:
    """The last emotion the recording gives after a supporter turn (a SAGE dialogue's final score)."""
    after_turns = [m.emotion for i, m in enumerate(request.messages) if i and m.emotion is not None]
    return after_turns[-1] if after_turns else None


def _pairs(turns: Sequence[ScoredTurn]) -> list[tuple[int, int]]:
    return [(turn.emotion, turn.recorded_emotion) for turn in turns if turn.recorded_emotion is not None]


def read_attune_file(path: str | Path) -> list[ScoreRequest]:
    """Score requests from a file: JSONL of :class:`ScoreRequest` objects, or an exported episode.

    An exported episode is the JSON of ``GET /v1/episodes/{id}`` (public or ``?view=internals``): its
    transcript becomes the messages, with the emotion each user message was said at as the recorded
    emotion, and ``emotions[0]`` the initial emotion; the internals' seed is kept, so scoring an episode
    with the backend that ran it reproduces its trajectory. A JSONL line may also hold an episode, and a
    whole-file JSON array a list of either.

    Raises:
        TranscriptFileError: Unreadable file, or an entry (named by line) that is not a valid dialogue.
    """
    path = Path(path)
    requests = []
    for where, data in _entries(_read(path), path):
        if not isinstance(data, dict):
            raise TranscriptFileError(f"{where}: expected a JSON object, not {type(data).__name__}")
        try:
            request = _from_episode(data) if "transcript" in data else ScoreRequest.model_validate(data)
            check_messages(request.messages)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise TranscriptFileError(f"{where}: {problems}") from None
        except InvalidRequest as exc:
            raise TranscriptFileError(f"{where}: {exc.message}") from None
        requests.append(request)
    if not requests:
        raise TranscriptFileError(f"{path}: no dialogues in the file")
    return requests


def read_sage_file(path: str | Path, warnings: list[str] | None = None) -> list[SageDialogue]:
    """SAGE recorded dialogues (JSONL records with ``player``, ``scene``, ``task`` and ``history``).

    Each record's persona is made by the profile importer (``sage-`` ids, language zh). ``history``
    becomes the messages as written; a user item's ``emotion-point`` (int, or a number in a string) is its
    recorded emotion, and a missing, non-numeric or out-of-range one is left out with a warning. The first
    user item's ``emotion-point`` is the initial emotion. A record that cannot be scored (no persona, no
    history, roles that do not alternate from the user, a blank message) is skipped with a warning.

    Args:
        path: The JSONL file.
        warnings: Receives ``FILE:LINE: message`` warnings, when given.

    Raises:
        TranscriptFileError: Unreadable file, or no record could be used.
    """
    path = Path(path)
    text = _read(path)
    notes = warnings if warnings is not None else []
    used: set[str] = set()
    dialogues = []
    for lineno, record in _records(text, path, notes):
        note = _Notes(path, lineno, notes)
        persona = _persona(record, "sage", lineno, used, note)
        if persona is None:
            continue
        used.add(persona.id)
        request = _sage_request(record, persona, note)
        if request is not None:
            dialogues.append(SageDialogue(persona, request, str(record.get("id") or persona.id)))
    if not dialogues:
        details = "".join(f"\n  {warning}" for warning in notes)
        raise TranscriptFileError(f"{path}: no dialogue could be read{details}")
    return dialogues


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise TranscriptFileError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TranscriptFileError(f"{path}: not valid UTF-8: {exc.reason}") from exc


def _entries(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    """(where, JSON value) of each entry: a whole-file JSON document, else one per non-blank line."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        if isinstance(whole, list):
            yield from ((f"{path}: item {index}", item) for index, item in enumerate(whole))
        else:
            yield str(path), whole
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise TranscriptFileError(f"{path}:{lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None


def _from_episode(data: dict[str, Any]) -> ScoreRequest:
    view: EpisodeView = (EpisodeInternals if "hidden_intention" in data else EpisodeView).model_validate(data)
    return ScoreRequest(
        persona_id=view.persona_id,
        messages=[
            ScoredMessage(role=m.role, content=m.content, emotion=m.emotion if m.role is Role.user else None)
            for m in view.transcript
        ],
        initial_emotion=view.emotions[0] if view.emotions else None,
        seed=view.seed if isinstance(view, EpisodeInternals) else 0,
    )


def _sage_request(record: dict[str, Any], persona: Persona, note: _Notes) -> ScoreRequest | None:
    history = record.get("history")
    if not isinstance(history, list) or not history:
        note(f"skipped {persona.id}: no 'history' list to score")
        return None
    messages = []
    for index, item in enumerate(history):
        role = item.get("role") if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role not in (Role.user.value, Role.assistant.value):
            note(f"skipped {persona.id}: history[{index}] has role {role!r}, not 'user' or 'assistant'")
            return None
        if not isinstance(content, str) or not content.strip():
            note(f"skipped {persona.id}: history[{index}] has no text 'content'")
            return None
        emotion = _emotion_point(item, f"{persona.id}: history[{index}]", note) if role == Role.user.value else None
        messages.append(ScoredMessage(role=Role(role), content=content.strip(), emotion=emotion))
    try:
        check_messages(messages, name="history")
    except InvalidRequest as exc:
        note(f"skipped {persona.id}: {exc.message}")
        return None
    initial = messages[0].emotion
    return ScoreRequest(persona_id=persona.id, messages=messages, initial_emotion=initial)


def _emotion_point(item: dict[str, Any], where: str, note: _Notes) -> int | None:
    if "emotion-point" not in item:
        note(f"{where} has no 'emotion-point'; no recorded emotion there")
        return None
    value = item["emotion-point"]
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(str(value).strip())
        if not math.isfinite(number):
            raise ValueError
    except ValueError:
        note(f"{where}: 'emotion-point' {value!r} is not a number; no recorded emotion there")
        return None
    if not 0 <= round(number) <= 100:
        note(f"{where}: 'emotion-point' {value!r} is outside 0..100; no recorded emotion there")
        return None
    return round(number)


def score_command(
    fmt: str,
    path: str | Path,
    settings: Settings,
    *,
    seed: int | None = None,
    as_json: bool = False,
    out_path: str | Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``attune score --format attune|sage FILE``: score every dialogue in-process and print a summary.

    For ``attune`` files the personas come from ``settings.packs``; SAGE records bring their own. Prints a
    table (or, with ``as_json``, one JSON object) of each dialogue's turns, final emotion ours and
    recorded, and correlations, then the pooled correlation and mean final emotions; ``out_path``
    receives every :class:`ScoreResponse` as JSONL, in file order.

    Returns:
        0 when every dialogue was scored, 1 otherwise (the reason goes to ``err``).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    warnings: list[str] = []
    try:
        if fmt == "sage":
            dialogues = [(d.record_id, d.persona, d.request) for d in read_sage_file(path, warnings)]
        else:
            requests = read_attune_file(path)
            catalog = PersonaCatalog.load(settings.packs)
            dialogues = [
                (f"{index}:{request.persona_id}", find_persona(catalog, request.persona_id), request)
                for index, request in enumerate(requests, start=1)
            ]
    except (TranscriptFileError, PackValidationError, PersonaNotFound) as exc:
        print(f"error: {exc}", file=err)
        return 1
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    if out_path is not None:
        try:  # before the (possibly long) scoring, so a bad path fails at once
            Path(out_path).touch()
        except OSError as exc:
            print(f"error: {out_path}: cannot write file: {exc.strerror or exc}", file=err)
            return 1
    if seed is not None:
        dialogues = [(name, persona, request.model_copy(update={"seed": seed})) for name, persona, request in dialogues]

    from env_server.llm.factory import build_simulator  # the transformers backend imports torch

    try:
        simulator = build_simulator(settings)
    except Exception as exc:
        print(f"error: the {settings.backend.value} simulator failed to load: {type(exc).__name__}: {exc}", file=err)
        return 1
    try:
        responses = asyncio.run(_score_all(simulator, dialogues, settings.default_reward()))
    except AttuneServerError as exc:
        print(f"error: {exc.message}", file=err)
        return 1
    if out_path is not None:
        Path(out_path).write_text("".join(r.model_dump_json() + "\n" for r in responses), encoding="utf-8")
    _print_summary(dialogues, responses, as_json, out)
    return 0


async def _score_all(
    simulator: Simulator, dialogues: list[tuple[str, Persona, ScoreRequest]], spec: RewardSpec
) -> list[ScoreResponse]:
    try:
        # Concurrently: a batching backend answers many dialogues' turns in one forward pass.
        return list(
            await asyncio.gather(
                *(
                    score_dialogue(
                        simulator,
                        persona,
                        request.messages,
                        initial_emotion=request.initial_emotion,
                        seed=request.seed,
                        spec=spec,
                    )
                    for _, persona, request in dialogues
                )
            )
        )
    finally:
        await simulator.aclose()


def _print_summary(
    dialogues: list[tuple[str, Persona, ScoreRequest]], responses: list[ScoreResponse], as_json: bool, out: TextIO
) -> None:
    rows = []
    for (name, _, request), response in zip(dialogues, responses, strict=True):
        rows.append(
            {
                "id": name,
                "persona_id": response.persona_id,
                "turns": len(response.turns),
                "final_emotion": response.emotions[-1],
                "recorded_final_emotion": recorded_final(request),
                "correlation": response.correlation.model_dump() if response.correlation else None,
            }
        )
    overall = overall_correlation(responses)
    recorded = [row["recorded_final_emotion"] for row in rows if row["recorded_final_emotion"] is not None]
    finals = {
        "n": len(rows),
        "ours": round(fmean(row["final_emotion"] for row in rows), 2),
        "n_recorded": len(recorded),
        "recorded": round(fmean(recorded), 2) if recorded else None,
    }
    if as_json:
        summary = {"dialogues": rows, "overall": overall.model_dump(), "mean_final_emotion": finals}
        print(json.dumps(summary, ensure_ascii=False), file=out)
        return
    print(f"{'dialogue':<40} {'turns':>5} {'ours':>5} {'theirs':>6} {'spearman':>8} {'pearson':>8}", file=out)
    for row in rows:
        corr = row["correlation"] or {}
        print(
            f"{row['id']:<40} {row['turns']:>5} {row['final_emotion']:>5} {_cell(row['recorded_final_emotion']):>6} "
            f"{_cell(corr.get('spearman')):>8} {_cell(corr.get('pearson')):>8}",
            file=out,
        )
    print(
        f"overall ({overall.n} turn pairs): spearman {_cell(overall.spearman)}, pearson {_cell(overall.pearson)}",
        file=out,
    )
    print(
        f"mean final emotion: ours {finals['ours']} over {finals['n']} dialogues; "
        f"recorded {finals['recorded']} over {finals['n_recorded']}",
        file=out,
    )


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
