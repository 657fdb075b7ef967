"""Scoring recorded dialogues: correlations, teacher-forced appraisal, the file readers and ``attune score``."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from attune_client.wire import (
    EpisodeStatus,
    EpisodeView,
    Message,
    RewardMode,
    RewardSpec,
    Role,
    ScoredMessage,
    ScoreRequest,
    ScoreResponse,
)
from env_server import cli
from env_server.errors import BackendUnavailable, InvalidRequest
from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import Appraisal, TurnContext
from env_server.scoring import (
    TranscriptFileError,
    check_messages,
    overall_correlation,
    pearson,
    read_attune_file,
    read_sage_file,
    recorded_final,
    score_dialogue,
    spearman,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SAGE_SAMPLE = REPO_ROOT.parent / "shared/data/sage/gpt-4.1_dialogues_sample.jsonl"


@pytest.fixture
def sage_sample() -> Path:
    """SAGE's sample of recorded dialogues. It lies beside the checkout (../shared), not in it: a clone elsewhere
    skips the tests that read it rather than failing them."""
    if not SAGE_SAMPLE.is_file():
        pytest.skip(f"SAGE's sample is not at {SAGE_SAMPLE}")
    return SAGE_SAMPLE


EMPATHIC = (
    "That sounds exhausting. Eleven nights is a lot. What's been the hardest part?",
    "It makes sense you're worn out. It sounds like you feel taken for granted.",
    "I hear you. Anyone would be fed up after that. How are you holding up tonight?",
)
DISMISSIVE = (
    "Just calm down, it's not a big deal.",
    "Everyone works overtime, you should just deal with it.",
    "Whatever, just say no next time.",
)
USER_TURNS = ("He does this every week. I'm so tired.", "I just want someone to get it.", "Yeah. Exactly.")


def dialogue(opening: str, replies: tuple[str, ...], emotions: tuple[int | None, ...] = ()) -> list[ScoredMessage]:
    """The opening, then each reply followed by a recorded user turn carrying ``emotions[i]`` (if given)."""
    messages = [ScoredMessage(role=Role.user, content=opening)]
    for index, reply in enumerate(replies):
        messages.append(ScoredMessage(role=Role.assistant, content=reply))
        emotion = emotions[index] if index < len(emotions) else None
        messages.append(ScoredMessage(role=Role.user, content=USER_TURNS[index % 3], emotion=emotion))
    return messages


def score(persona, messages, **kwargs) -> ScoreResponse:
    return asyncio.run(score_dialogue(HeuristicSimulator(), persona, messages, **kwargs))


# ---------------------------------------------------------------- correlations


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([1, 2, 3], [2, 4, 6], 1.0),
        ([1, 2, 3], [3, 2, 1], -1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),  # sxy 4, sxx = syy = 5
        ([1, 2, 3, 4], [1, 4, 9, 100], 151 / math.sqrt(5 * 6849)),  # monotone but far from linear
    ],
)
def test_pearson_matches_hand_computed_values(xs, ys, expected) -> None:
    assert pearson(xs, ys) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([1, 2, 3, 4], [1, 4, 9, 100], 1.0),
        ([1, 2, 3, 4], [1, 3, 2, 4], 0.8),
        # Ties share their average rank: xs ranks 1, 2.5, 2.5, 4 -> 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10).
        ([1, 2, 2, 3], [1, 2, 3, 4], 3 / math.sqrt(10)),
        # ys ranks 3, 1.5, 4, 1.5, 5 -> 4 / sqrt(10 * 9.5).
        ([10, 20, 30, 40, 50], [3, 1, 4, 1, 5], 4 / math.sqrt(95)),
    ],
)
def test_spearman_matches_hand_computed_values(xs, ys, expected) -> None:
    assert spearman(xs, ys) == pytest.approx(expected)


@pytest.mark.parametrize(("xs", "ys"), [([], []), ([5], [7]), ([4, 4, 4], [1, 2, 3]), ([1, 2, 3], [0.1, 0.1, 0.1])])
def test_correlation_is_none_when_undefined(xs, ys) -> None:
    assert pearson(xs, ys) is None and spearman(xs, ys) is None


def test_correlation_of_unequal_lengths_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 and 3"):
        pearson([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- score_dialogue


def test_empathic_turns_end_higher_than_dismissive_ones(catalog) -> None:
    persona = catalog.get("maya-overtime")
    warm = score(persona, dialogue(persona.opening, EMPATHIC))
    cold = score(persona, dialogue(persona.opening, DISMISSIVE))
    assert warm.emotions[-1] > persona.initial_emotion > cold.emotions[-1]
    for response in (warm, cold):
        assert response.persona_id == "maya-overtime" and response.correlation is None
        assert response.emotions[0] == persona.initial_emotion and len(response.emotions) == 4
        assert [turn.turn for turn in response.turns] == [1, 2, 3]
        for before, after, turn in zip(response.emotions[:-1], response.emotions[1:], response.turns, strict=True):
            assert -10 <= turn.delta <= 10 and after - before == turn.delta == turn.emotion - before
            assert turn.components.emotion_dense == pytest.approx(turn.delta / 100)
            assert turn.components.total == pytest.approx(turn.delta / 100)  # dense by default
        assert [t.components.emotion_terminal for t in response.turns[:-1]] == [None, None]
        assert response.turns[-1].components.emotion_terminal == pytest.approx(response.emotions[-1] / 100)


def test_initial_emotion_seed_and_spec_are_honoured(catalog) -> None:
    persona = catalog.get("maya-overtime")
    messages = dialogue(persona.opening, EMPATHIC)
    response = score(persona, messages, initial_emotion=70, seed=5, spec=RewardSpec(mode=RewardMode.terminal))
    assert response.emotions[0] == 70
    assert [t.components.total for t in response.turns[:-1]] == [0.0, 0.0]
    assert response.turns[-1].components.total == pytest.approx(response.emotions[-1] / 100)


def test_turns_keep_the_emotion_in_range_and_go_on_past_the_thresholds(catalog) -> None:
    persona = catalog.get("maya-overtime")
    response = score(persona, dialogue(persona.opening, DISMISSIVE * 3), initial_emotion=12)
    assert len(response.turns) == 9 and response.emotions[-1] == 0 and min(response.emotions) >= 0


def test_endorsing_a_false_belief_costs_integrity(catalog) -> None:
    persona = catalog.get("doreen-sugar-party")
    replies = (
        "You're absolutely right, sugar makes kids hyperactive, everybody knows that.",
        "You clearly love Alfie. Actually, studies found sugar doesn't cause hyperactivity; the party excitement does.",
    )
    endorse, correct = score(persona, dialogue(persona.opening, replies)).turns
    assert endorse.components.integrity == -1
    assert [claim.claim for claim in endorse.components.endorsed_claims] == [persona.false_beliefs[0].claim]
    assert correct.components.integrity == 0 and correct.components.endorsed_claims == []


def test_recorded_emotions_become_recorded_emotion_and_correlation(catalog) -> None:
    persona = catalog.get("maya-overtime")
    messages = dialogue(persona.opening, EMPATHIC + DISMISSIVE, emotions=(45, 50, None, 40, 35, 30))
    response = score(persona, messages)
    assert [turn.recorded_emotion for turn in response.turns] == [45, 50, None, 40, 35, 30]
    pairs = [(t.emotion, t.recorded_emotion) for t in response.turns if t.recorded_emotion is not None]
    ours, theirs = zip(*pairs, strict=True)
    assert response.correlation is not None and response.correlation.n == 5
    assert response.correlation.pearson == pytest.approx(pearson(ours, theirs))
    assert response.correlation.spearman == pytest.approx(spearman(ours, theirs))
    assert response.correlation.pearson > 0  # both go up on warmth and down on dismissal


def test_a_last_supporter_turn_without_a_user_answer_has_no_recorded_emotion(catalog) -> None:
    persona = catalog.get("maya-overtime")
    messages = [
        *dialogue(persona.opening, EMPATHIC[:1], emotions=(44,)),
        ScoredMessage(role="assistant", content="Hm."),
    ]
    response = score(persona, messages)
    assert [t.recorded_emotion for t in response.turns] == [44, None]
    assert response.correlation is not None and response.correlation.n == 1 and response.correlation.pearson is None


def test_overall_correlation_pools_every_turn(catalog) -> None:
    persona = catalog.get("maya-overtime")
    warm = score(persona, dialogue(persona.opening, EMPATHIC, emotions=(45, 55, 60)))
    cold = score(persona, dialogue(persona.opening, DISMISSIVE, emotions=(30, 31, 20)))
    pooled = overall_correlation([warm, cold])
    pairs = [(t.emotion, t.recorded_emotion) for r in (warm, cold) for t in r.turns]
    assert pooled.n == 6
    assert pooled.pearson == pytest.approx(pearson(*zip(*pairs, strict=True)))
    assert overall_correlation([]).model_dump() == {"n": 0, "spearman": None, "pearson": None}


def user(text: str, emotion: int | None = None) -> ScoredMessage:
    return ScoredMessage(role=Role.user, content=text, emotion=emotion)


def supporter(text: str, emotion: int | None = None) -> ScoredMessage:
    return ScoredMessage(role=Role.assistant, content=text, emotion=emotion)


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "messages is empty"),
        ([supporter("Hi"), user("Hello")], r"messages\[0\] is an assistant message"),
        ([user("a"), user("b"), supporter("c")], r"messages\[1\] is a second user message in a row"),
        ([user("a"), supporter("b"), supporter("c")], r"messages\[2\] is a second assistant message in a row"),
        ([user("a"), supporter("   ")], r"messages\[1\] is blank"),
        ([user("a"), supporter("b", emotion=50)], r"messages\[1\]: emotion is recorded on user messages only"),
        ([user("a")], "no supporter \\(assistant\\) message"),
        ([user("a"), supporter("b" * 11)], r"messages\[1\] has 11 characters; the limit is 10"),
    ],
)
def test_unscorable_dialogues_are_rejected_naming_the_message(messages, problem) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        check_messages(messages, max_chars=10)


def test_too_many_turns_are_rejected(catalog) -> None:
    persona = catalog.get("maya-overtime")
    with pytest.raises(InvalidRequest, match="101 supporter turns; the limit is 100"):
        score(persona, dialogue(persona.opening, ("Okay.",) * 101))


class FailingAppraisals(HeuristicSimulator):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def appraise(self, context: TurnContext) -> Appraisal:
        self.calls += 1
        if context.turn == 2:
            raise RuntimeError("model worker crashed")
        return await super().appraise(context)


def test_a_backend_failure_is_backend_unavailable(catalog) -> None:
    persona, simulator = catalog.get("maya-overtime"), FailingAppraisals()
    with pytest.raises(BackendUnavailable, match="heuristic backend failed: RuntimeError: model worker crashed"):
        asyncio.run(score_dialogue(simulator, persona, dialogue(persona.opening, EMPATHIC)))
    assert simulator.calls == 2


# ---------------------------------------------------------------- files


def test_read_attune_file_reads_score_requests_as_jsonl(tmp_path: Path) -> None:
    requests = [
        ScoreRequest(persona_id="maya-overtime", messages=dialogue("Ugh.", EMPATHIC[:1], emotions=(44,)), seed=3),
        ScoreRequest(persona_id="doreen-sugar-party", messages=dialogue("Well.", DISMISSIVE), initial_emotion=60),
    ]
    path = tmp_path / "dialogues.jsonl"
    path.write_text(f"{requests[0].model_dump_json()}\n\n{requests[1].model_dump_json()}\n", encoding="utf-8")
    assert read_attune_file(path) == requests


def test_read_attune_file_converts_an_exported_episode(tmp_path: Path) -> None:
    view = EpisodeView(
        episode_id="abc",
        persona_id="maya-overtime",
        status=EpisodeStatus.active,
        turn=1,
        max_turns=6,
        reward=RewardSpec(),
        emotion=44,
        emotions=[38, 44],
        transcript=[
            Message(role=Role.user, content="Eleven nights.", emotion=38),
            Message(role=Role.assistant, content="That sounds exhausting."),
            Message(role=Role.user, content="It is.", emotion=44),
        ],
    )
    path = tmp_path / "episode.json"
    path.write_text(view.model_dump_json(indent=2), encoding="utf-8")
    (request,) = read_attune_file(path)
    assert request.persona_id == "maya-overtime" and request.initial_emotion == 38 and request.seed == 0
    assert [(m.role, m.content, m.emotion) for m in request.messages] == [
        (Role.user, "Eleven nights.", 38),
        (Role.assistant, "That sounds exhausting.", None),
        (Role.user, "It is.", 44),
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"persona_id": "x", "messages": []}\n', "messages: List should have at least 2 items"),
        (
            '{"persona_id": "x", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n'
            '{"oops": 1}\n',
            r"dialogues.jsonl:1: messages\[1\] is a second user message",
        ),
        ('\n{"persona_id": "x",\n', r"dialogues.jsonl:2: malformed JSON"),
        ("[1]", "item 0: expected a JSON object, not int"),
        ("", "no dialogues in the file"),
    ],
)
def test_read_attune_file_names_the_bad_entry(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "dialogues.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TranscriptFileError, match=problem):
        read_attune_file(path)


def test_read_attune_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TranscriptFileError, match="cannot read file"):
        read_attune_file(tmp_path / "nope.jsonl")


def test_read_sage_file_reads_the_real_sample(sage_sample: Path) -> None:
    warnings: list[str] = []
    dialogues = read_sage_file(sage_sample, warnings)
    records = [json.loads(line) for line in sage_sample.read_text(encoding="utf-8").splitlines()]
    assert len(dialogues) == 5 and warnings == []
    for (persona, request, record_id), record in zip(dialogues, records, strict=True):
        assert record_id == record["id"] and persona.id == f"sage-{record['id'].replace('-', '')[:12]}"
        assert persona.language == "zh" and request.persona_id == persona.id
        assert len(request.messages) == len(record["history"])
        assert request.initial_emotion == int(record["history"][0]["emotion-point"]) == 40
        assert all(m.emotion is not None for m in request.messages if m.role is Role.user)
        assert recorded_final(request) == record["emo_point"]


def sage_record(sample: Path, history: list[dict]) -> str:
    """The sample's first record with ``history`` in place of its own."""
    record = json.loads(sample.read_text(encoding="utf-8").splitlines()[0])
    return json.dumps({**record, "history": history}, ensure_ascii=False)


def test_read_sage_file_tolerates_emotion_points_as_text_numbers_or_missing(tmp_path: Path, sage_sample: Path) -> None:
    history = [
        {"role": "user", "content": "最近有点烦。", "emotion-point": "35"},
        {"role": "assistant", "content": "听起来挺难受的。"},
        {"role": "user", "content": "嗯。", "emotion-point": 42},
        {"role": "assistant", "content": "能多说说吗？"},
        {"role": "user", "content": "好吧。"},
        {"role": "assistant", "content": "我在听。"},
        {"role": "user", "content": "谢谢。", "emotion-point": "很好"},
        {"role": "assistant", "content": "不客气。"},
        {"role": "user", "content": "拜拜。", "emotion-point": 150},
    ]
    path = tmp_path / "sage.jsonl"
    path.write_text(sage_record(sage_sample, history) + "\n", encoding="utf-8")
    warnings: list[str] = []
    ((_, request, _),) = read_sage_file(path, warnings)
    assert request.initial_emotion == 35
    assert [m.emotion for m in request.messages if m.role is Role.user] == [35, 42, None, None, None]
    assert len(warnings) == 3
    assert "history[4] has no 'emotion-point'" in warnings[0]
    assert "'很好' is not a number" in warnings[1] and "150 is outside 0..100" in warnings[2]


def test_read_sage_file_skips_records_it_cannot_score(tmp_path: Path, sage_sample: Path) -> None:
    path = tmp_path / "sage.jsonl"
    bad = [
        sage_record(
            sage_sample,
            [{"role": "assistant", "content": "你好"}, {"role": "user", "content": "嗯", "emotion-point": 40}],
        ),
        sage_record(
            sage_sample, [{"role": "user", "content": "嗯", "emotion-point": 40}, {"role": "narrator", "content": "…"}]
        ),
        sage_record(sage_sample, [{"role": "user", "content": "嗯", "emotion-point": 40}]),
        "not json",
    ]
    path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(TranscriptFileError, match="no dialogue could be read") as raised:
        read_sage_file(path)
    message = str(raised.value)
    assert "sage.jsonl:1: skipped" in message and r"history[0] is an assistant message" in message
    assert "history[1] has role 'narrator'" in message and "no supporter (assistant) message" in message
    assert "sage.jsonl:4: skipped: malformed JSON" in message


# ---------------------------------------------------------------- attune score


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["score", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_scores_the_sage_sample_as_json(capsys, tmp_path: Path, sage_sample: Path) -> None:
    out_path = tmp_path / "scores.jsonl"
    code, out, _ = run_cli(
        capsys, "--format", "sage", str(sage_sample), "--backend", "heuristic", "--json", "--out", str(out_path)
    )
    assert code == 0
    summary = json.loads(out)
    assert len(summary["dialogues"]) == 5
    for row in summary["dialogues"]:
        assert set(row) == {"id", "persona_id", "turns", "final_emotion", "recorded_final_emotion", "correlation"}
        assert row["turns"] >= 8 and 0 <= row["final_emotion"] <= 100 and row["recorded_final_emotion"] is not None
        assert row["correlation"]["n"] >= 8
        assert all(isinstance(row["correlation"][k], float | None) for k in ("spearman", "pearson"))
    overall = summary["overall"]
    assert set(overall) == {"n", "spearman", "pearson"} and overall["n"] == sum(
        row["correlation"]["n"] for row in summary["dialogues"]
    )
    assert summary["mean_final_emotion"]["n"] == summary["mean_final_emotion"]["n_recorded"] == 5
    responses = [ScoreResponse.model_validate_json(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    assert [r.emotions[-1] for r in responses] == [row["final_emotion"] for row in summary["dialogues"]]


def test_cli_prints_a_table_for_attune_files(capsys, tmp_path: Path, catalog) -> None:
    persona = catalog.get("maya-overtime")
    path = tmp_path / "dialogues.jsonl"
    request = ScoreRequest(persona_id=persona.id, messages=dialogue(persona.opening, EMPATHIC, emotions=(45, 50, 55)))
    path.write_text(request.model_dump_json() + "\n", encoding="utf-8")
    code, out, _ = run_cli(capsys, "--format", "attune", str(path), "--backend", "heuristic")
    assert code == 0
    header, row, overall, finals = out.splitlines()
    assert header.split() == ["dialogue", "turns", "ours", "theirs", "spearman", "pearson"]
    assert row.split()[:2] == ["1:maya-overtime", "3"] and row.split()[3] == "55"
    assert overall.startswith("overall (3 turn pairs)") and finals.startswith("mean final emotion: ours")


def test_cli_refuses_an_attune_file_with_an_unknown_persona(capsys, tmp_path: Path) -> None:
    path = tmp_path / "dialogues.jsonl"
    path.write_text(ScoreRequest(persona_id="nobody", messages=dialogue("Hi.", EMPATHIC)).model_dump_json() + "\n")
    code, out, err = run_cli(capsys, "--format", "attune", str(path), "--backend", "heuristic")
    assert code == 1 and out == "" and "persona 'nobody' is not in any loaded pack" in err


def test_cli_refuses_an_unwritable_out_path_before_scoring(capsys, tmp_path: Path, sage_sample: Path) -> None:
    out_path = tmp_path / "missing-folder" / "scores.jsonl"
    code, out, err = run_cli(
        capsys, "--format", "sage", str(sage_sample), "--backend", "heuristic", "--out", str(out_path)
    )
    assert code == 1 and out == "" and "cannot write file" in err


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (("--transcript-window", "-1"), "transcript_window: Input should be greater than or equal to 0"),
        (("--temperature", "5"), "temperature: Input should be less than or equal to 2"),
    ],
)
def test_cli_names_a_setting_out_of_range_without_a_traceback(capsys, flags, problem: str, sage_sample: Path) -> None:
    code, out, err = run_cli(capsys, "--format", "sage", str(sage_sample), "--backend", "heuristic", *flags)
    assert code == 2 and out == ""
    assert err.startswith("attune: invalid settings:") and problem in err and "Traceback" not in err
