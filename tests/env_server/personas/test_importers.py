"""Importing RLVER and SAGE profiles as persona packs: the real samples, quirks, and the command."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from attune_client.wire import Difficulty, IntentionType
from env_server.personas import importers
from env_server.personas.commands import validate
from env_server.personas.importers import (
    GENERIC_REACTIONS,
    ProfileImportError,
    import_command,
    import_profiles,
    infer_intention_type,
    parse_scene,
    write_pack_yaml,
)
from env_server.personas.loader import PersonaCatalog, read_pack

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA = REPO_ROOT.parent / "shared" / "data"
RLVER_SAMPLE = DATA / "rlver" / "train_profile_sample.jsonl"
SAGE_SAMPLE = DATA / "sage" / "gpt-4.1_dialogues_sample.jsonl"

SCENE = """\
## 背景故事

李华和同事因为项目分工发生了争执，上司没有表态。

## 角色不同emotion下的反应

- **emotion高时**
  对话风格：平和、放松。

- **emotion低时**
  对话风格：激动、绝望。

- **emotion一般时**
  对话风格：急躁、失落。

## 角色面对NPC不同回复的反应

- **NPC贴合角色隐藏主题的回复**
  如果NPC认真倾听，李华的emotion会升高。

- **NPC偏离角色隐藏主题的回复**
  如果NPC急着给建议，李华的emotion会下降。
####隐藏主题:
***你希望对方用心倾听你的情绪宣泄"""

PLAYER = "* 姓名：李华\n* 年龄：28岁\n* 职业：程序员"
TASK = "你希望对方用心倾听你的情绪宣泄"


def record(n: int = 1, **fields: Any) -> dict[str, Any]:
    """A RLVER-style record; a field given as None is left out."""
    base: dict[str, Any] = {
        "id": f"0000000{n}-aaaa-bbbb-cccc-ddddeeeeffff",
        "player": PLAYER,
        "scene": SCENE,
        "main_cha": "被动型",
        "cha_group": ["敏感", "内向"],
        "task": TASK,
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def write_jsonl(path: Path, *lines: dict[str, Any] | str, newline: str = "\n", bom: bool = False) -> Path:
    text = newline.join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (text + newline).encode("utf-8"))
    return path


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def rlver_sample() -> Path:
    if not RLVER_SAMPLE.is_file():
        pytest.skip(f"RLVER sample not found at {RLVER_SAMPLE}")
    return RLVER_SAMPLE


@pytest.fixture
def sage_sample() -> Path:
    if not SAGE_SAMPLE.is_file():
        pytest.skip(f"SAGE sample not found at {SAGE_SAMPLE}")
    return SAGE_SAMPLE


def test_all_is_sorted() -> None:
    assert importers.__all__ == sorted(importers.__all__)


def test_rlver_sample_imports_every_profile(rlver_sample: Path) -> None:
    pack, warnings = import_profiles(rlver_sample, "rlver")
    records = load_jsonl(rlver_sample)
    assert warnings == []  # every real scene has all five reaction sections where the parser finds them
    assert pack.pack == "rlver-train_profile_sample"
    assert pack.language == "zh"
    assert len(pack.personas) == len(records) == 20
    assert len({p.id for p in pack.personas}) == 20
    for persona, source in zip(pack.personas, records, strict=True):
        assert persona.id == "rlver-" + source["id"].replace("-", "")[:12]
        assert persona.language == "zh"
        assert persona.hidden_intention == source["task"]
        assert persona.name == re.search(r"姓名[：:]\s*(\S+)", source["player"]).group(1)
        assert persona.profile == "\n".join(line.rstrip() for line in source["player"].splitlines()).strip()
        assert persona.initial_emotion == 30
        assert persona.difficulty is Difficulty.normal
        assert persona.opening is None
        assert persona.tags[:2] == ["source:rlver", f"type:{source['main_cha']}"]
        assert persona.tags[2:-1] == [f"trait:{trait}" for trait in source["cha_group"]]
        assert persona.tags[-1] == "intention-inferred"
        assert set(persona.reactions.model_dump().values()).isdisjoint(GENERIC_REACTIONS.values())
        for marker in ("emotion高", "Emotion高", "贴合", "偏离", "####隐藏主题"):
            assert marker not in persona.background
    first = pack.personas[0]
    assert first.name == "王丽娜"
    assert first.background.startswith("## 背景故事\n\n**事件起因**")
    assert first.reactions.high.startswith("对话风格：平和、放松。")
    assert first.reactions.low.startswith("对话风格：激动、绝望。")
    assert first.reactions.medium.startswith("对话风格：急躁、失落。")
    assert first.reactions.fit.startswith("如果NPC能够提供具体可行的建议")
    assert first.reactions.miss.startswith("如果NPC的回复泛泛而谈")
    assert first.intention_type is IntentionType.practical_advice


def test_sage_sample_keeps_opening_topic_and_first_emotion(sage_sample: Path) -> None:
    pack, warnings = import_profiles(sage_sample, "sage")
    records = load_jsonl(sage_sample)
    assert warnings == []
    assert len(pack.personas) == 5
    for persona, source in zip(pack.personas, records, strict=True):
        assert persona.id.startswith("sage-")
        assert persona.language == "zh"
        assert persona.hidden_intention == source["task"]
        first_turn = source["history"][0]
        assert persona.opening == source.get("first_talk", first_turn["content"])
        assert persona.initial_emotion == int(first_turn["emotion-point"]) == 40
        assert persona.topic == source["topic"]
        assert f"type:{source['character']}" in persona.tags


def test_sage_first_talk_wins_over_history(tmp_path: Path) -> None:
    history = [
        {"role": "user", "content": "最近有点烦。", "emotion-point": "35"},
        {"role": "assistant", "content": "嗯"},
    ]
    path = write_jsonl(tmp_path / "sage.jsonl", record(1, first_talk="我想聊聊。", history=history), record(2))
    pack, _ = import_profiles(path, "sage")
    assert pack.personas[0].opening == "我想聊聊。"
    assert pack.personas[0].initial_emotion == 35
    assert pack.personas[1].opening is None
    assert pack.personas[1].initial_emotion == 40


@pytest.mark.parametrize("fmt", ["rlver", "sage"])
def test_written_yaml_reloads_and_serves(fmt: str, rlver_sample: Path, sage_sample: Path, tmp_path: Path) -> None:
    source = rlver_sample if fmt == "rlver" else sage_sample
    pack, _ = import_profiles(source, fmt)  # type: ignore[arg-type]
    path = write_pack_yaml(pack, tmp_path / f"{fmt}.yaml", comment="imported for a test")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# imported for a test\n")
    assert "profile: |-" in text and "\\u" not in text  # block style, Chinese kept as is
    assert read_pack(path).pack == pack
    catalog = PersonaCatalog.load([path])
    assert len(catalog) == len(pack.personas)
    assert validate([path], out=io.StringIO(), err=io.StringIO()) == 0


@pytest.mark.parametrize(
    "cha_group",
    [
        ["敏感", "内向"],
        "['敏感', '内向']",
        '["敏感", "内向"]',
        "敏感、内向",
        "敏感, 内向",
        "敏感，内向",
        "('敏感', '内向')",
    ],
)
def test_cha_group_forms_give_the_same_traits(cha_group: object, tmp_path: Path) -> None:
    pack, warnings = import_profiles(write_jsonl(tmp_path / "p.jsonl", record(cha_group=cha_group)), "rlver")
    assert warnings == []
    assert pack.personas[0].tags == ["source:rlver", "type:被动型", "trait:敏感", "trait:内向", "intention-inferred"]


def test_cha_group_repr_is_never_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = "[__import__('os').system('touch pwned')]"
    pack, warnings = import_profiles(write_jsonl(tmp_path / "p.jsonl", record(cha_group=evil)), "rlver")
    assert not (tmp_path / "pwned").exists()
    assert warnings == []
    assert all(tag.startswith("trait:") for tag in pack.personas[0].tags[2:-1])


def test_hidden_intention_from_marker_when_no_task(tmp_path: Path) -> None:
    pack, warnings = import_profiles(write_jsonl(tmp_path / "p.jsonl", record(task=None)), "rlver")
    assert warnings == []
    assert pack.personas[0].hidden_intention == "你希望对方用心倾听你的情绪宣泄"
    assert pack.personas[0].intention_type is IntentionType.vent


def test_record_without_hidden_intention_is_skipped(tmp_path: Path) -> None:
    scene = SCENE.split("####")[0]
    path = write_jsonl(tmp_path / "p.jsonl", record(1, task=None, scene=scene), record(2))
    pack, warnings = import_profiles(path, "rlver")
    assert [p.id for p in pack.personas] == ["rlver-00000002aaaa"]
    message = "skipped rlver-00000001aaaa: no hidden intention (neither 'task' nor '####隐藏主题:' in 'scene')"
    assert warnings == [f"{path}:1: {message}"]


def test_malformed_line_is_reported_and_the_rest_imported(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl", record(1), "", '{"id": "broken", "player": ', "[1, 2]", record(2, extra="ignored")
    )
    pack, warnings = import_profiles(path, "rlver")
    assert len(pack.personas) == 2
    assert len(warnings) == 2
    assert warnings[0].startswith(f"{path}:3: skipped: malformed JSON: ")
    assert warnings[1] == f"{path}:4: skipped: a record must be a JSON object, not list"


def test_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    crlf = record(1, player=PLAYER.replace("\n", "\r\n"), scene=SCENE.replace("\n", "\r\n"))
    path = write_jsonl(tmp_path / "p.jsonl", crlf, "", "   ", record(2), newline="\r\n", bom=True)
    pack, warnings = import_profiles(path, "rlver")
    assert warnings == []
    assert len(pack.personas) == 2
    assert pack.personas[0] == pack.personas[1].model_copy(update={"id": pack.personas[0].id})
    assert "\r" not in pack.personas[0].background


@pytest.mark.parametrize(
    ("heading", "key"),
    [
        ("- **emotion高时**", "high"),
        ("#### Emotion高时：", "high"),
        ("**高情绪状态:**", "high"),
        ("- **高emotion时**：", "high"),
        ("1. **角色emotion低时**：", "low"),
        ("- *角色emotion低时，对话风格*：", "low"),
        ("**低情绪状态:**", "low"),
        ("- **情绪一般状态:**", "medium"),
        ("### 角色emotion一般时，对话风格", "medium"),
        ("*NPC怎样的回复会贴合角色的隐藏主题，使得角色emotion会上升？*", "fit"),
        ("* **NPC的贴合回复**：", "fit"),
        ("- **正面回复：**", "fit"),
        ("- **NPC回复偏离隐藏主题：**", "miss"),
        ("#### NPC偏离角色隐藏主题的回复", "miss"),
        ("- **负面回复：**", "miss"),
    ],
)
def test_reaction_heading_variants(heading: str, key: str) -> None:
    parts = parse_scene(f"**背景故事**\n\n故事。\n\n**玩家不同状态下可能的反应**\n\n{heading}\n  反应文字。")
    assert parts.background == "**背景故事**\n\n故事。"
    assert parts.reactions == {key: "反应文字。"}
    assert parts.hidden is None


def test_inline_reaction_text_and_epilogue() -> None:
    parts = parse_scene(
        "故事。\n\n### 玩家不同状态下可能的反应\n"
        "- **emotion高时**：平和。\n- **emotion低时**：激动。\n- **emotion一般时**：急躁。\n"
        "### NPC回复的影响\n- **贴合隐藏主题的回复**：上升。\n- **偏离隐藏主题的回复**：下降。\n\n"
        "通过这次倾诉，他希望被理解。\n####隐藏主题:\n***你希望对方用心倾听你的情绪宣泄\n"
    )
    assert parts.reactions == {"high": "平和。", "medium": "急躁。", "low": "激动。", "fit": "上升。", "miss": "下降。"}
    assert parts.background == "故事。\n\n通过这次倾诉，他希望被理解。"
    assert parts.hidden == "你希望对方用心倾听你的情绪宣泄"


def test_missing_reaction_sections_get_generic_text(tmp_path: Path) -> None:
    scene = SCENE.split("## 角色面对NPC")[0]  # no fit / miss sections
    path = write_jsonl(tmp_path / "p.jsonl", record(scene=scene))
    pack, warnings = import_profiles(path, "rlver")
    reactions = pack.personas[0].reactions
    assert reactions.fit == GENERIC_REACTIONS["fit"]
    assert reactions.miss == GENERIC_REACTIONS["miss"]
    assert reactions.high == "对话风格：平和、放松。"
    assert warnings == [
        f"{path}:1: rlver-00000001aaaa: no '{key}' reaction section in 'scene'; used a generic sentence"
        for key in ("fit", "miss")
    ]


@pytest.mark.parametrize(
    ("hidden", "expected"),
    [
        ("你希望对方用心倾听你的情绪宣泄", IntentionType.vent),
        ("你希望对方深刻共情你的感受，而不是简单的安慰", IntentionType.deep_empathy),
        ("你认为自己在事件中没有任何责任和错误，你想要对方也认同你没有错", IntentionType.validation),
        ("你希望对方真诚地夸奖你在事件中的具体行为", IntentionType.validation),
        ("你想获得能真实帮助你解决当下困境的建议", IntentionType.practical_advice),
        ("你想分析事件中其他人物这么做的原因", IntentionType.understand_other),
        ("你希望对方辩证地分析事件中的问题", IntentionType.understand_other),
        ("你希望对方引导你针对事件进行自我反思，收获自我成长", IntentionType.deep_empathy),
        ("你很生气，希望对方认真对待你的怒火", IntentionType.anger_acknowledged),
        ("你在纠结要不要辞职", IntentionType.ambivalence),
        ("你想知道自己要不要辞职", IntentionType.ambivalence),
        ("你想被倾听，不要建议", IntentionType.vent),
        ("你希望被共情，而不是听到建议", IntentionType.deep_empathy),
        ("你想聊聊天", None),
    ],
)
def test_infer_intention_type(hidden: str, expected: IntentionType | None) -> None:
    assert infer_intention_type(hidden) is expected


def test_unmatched_intention_defaults_with_warning(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", record(task="你想聊聊天"))
    pack, warnings = import_profiles(path, "rlver")
    assert pack.personas[0].intention_type is IntentionType.deep_empathy
    assert "intention-inferred" in pack.personas[0].tags
    assert warnings == [
        f"{path}:1: rlver-00000001aaaa: 'task' and the scene's ####隐藏主题 differ; used 'task'",
        f"{path}:1: rlver-00000001aaaa: no intention keyword in '你想聊聊天'; intention_type set to deep_empathy",
    ]


def test_ids_names_topic_and_emotion_fallbacks(tmp_path: Path) -> None:
    long_topic = "话题" * 31
    history = [{"role": "user", "content": "嗨", "emotion-point": 120}]
    path = write_jsonl(
        tmp_path / "p.jsonl",
        record(1),
        record(1),  # the same id again
        record(3, id=None, player="* 年龄：30岁"),
        record(4, id="Custom ID 7", topic=long_topic, history=history),
    )
    pack, warnings = import_profiles(path, "sage", pack_name="my-pack")
    assert pack.pack == "my-pack"
    assert [p.id for p in pack.personas] == [
        "sage-00000001aaaa",
        "sage-00000001aaaa-2",
        "sage-line3",
        "sage-custom-id-7",
    ]
    assert pack.personas[2].name == "sage-line3"
    assert pack.personas[3].topic is None
    assert pack.personas[3].initial_emotion == 99
    assert warnings == [
        f"{path}:2: persona id sage-00000001aaaa is already used; this record is sage-00000001aaaa-2",
        f"{path}:3: no usable 'id'; the persona id is sage-line3",
        f"{path}:3: sage-line3: no '姓名：' line in 'player'; the name is the persona id",
        f"{path}:4: sage-custom-id-7: 'topic' is longer than 60 characters; left out",
        f"{path}:4: sage-custom-id-7: emotion-point 120 is outside 10..99; initial_emotion 99",
    ]


def test_record_without_player_is_skipped(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", record(1, player=None), record(2, scene=["not", "text"]), record(3))
    pack, warnings = import_profiles(path, "rlver")
    assert [p.id for p in pack.personas] == ["rlver-00000003aaaa"]
    assert warnings == [
        f"{path}:1: skipped rlver-00000001aaaa: no 'player'",
        f"{path}:2: 'scene' is a list, not text; ignored",
        f"{path}:2: skipped rlver-00000002aaaa: no 'scene'",
    ]


@pytest.mark.parametrize(
    ("lines", "fmt", "pack_name", "match"),
    [
        ([], "rlver", None, "no personas imported: it has no records"),
        (["{not json"], "rlver", None, r"none of its 1 line\(s\) could be imported\n  .*:1: skipped: malformed"),
        ([record(task=None, scene="只有故事。")], "rlver", None, r"none of its 1 line\(s\) could be imported"),
        ([record()], "other", None, "unknown format 'other'"),
        ([record()], "rlver", "Bad Name", "invalid pack name 'Bad Name'"),
    ],
)
def test_import_errors(lines: list[Any], fmt: str, pack_name: str | None, match: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", *lines) if lines else tmp_path / "empty.jsonl"
    if not lines:
        path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ProfileImportError, match=match):
        import_profiles(path, fmt, pack_name=pack_name)  # type: ignore[arg-type]


def test_unreadable_input(tmp_path: Path) -> None:
    with pytest.raises(ProfileImportError, match="cannot read file"):
        import_profiles(tmp_path / "missing.jsonl", "rlver")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"player": "caf\xe9"}\n')
    with pytest.raises(ProfileImportError, match="not valid UTF-8"):
        import_profiles(tmp_path / "latin1.jsonl", "rlver")


def run_import(fmt: str, in_path: Path, out_path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = import_command(fmt, in_path, out_path, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_import_command_success_with_warnings(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", record(1), "{broken", record(2))
    target = tmp_path / "out.yaml"
    code, out, err = run_import("rlver", source, target)
    assert code == 0
    assert out == f"Imported 2 personas from {source} (rlver) into {target} (pack rlver-in); 1 warning(s)\n"
    assert err.startswith(f"warning: {source}:2: skipped: malformed JSON")
    assert len(read_pack(target).pack.personas) == 2


def test_import_command_real_sample(rlver_sample: Path, tmp_path: Path) -> None:
    code, out, err = run_import("rlver", rlver_sample, tmp_path / "rlver.yaml")
    assert (code, err) == (0, "")
    assert out.startswith("Imported 20 personas from ")


def test_import_command_failures(tmp_path: Path) -> None:
    empty = write_jsonl(tmp_path / "empty.jsonl", "{broken")
    code, out, err = run_import("sage", empty, tmp_path / "out.yaml")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {empty}: no personas imported")
    assert not (tmp_path / "out.yaml").exists()

    good = write_jsonl(tmp_path / "good.jsonl", record())
    code, out, err = run_import("rlver", good, tmp_path / "no-such-dir" / "out.yaml")
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {tmp_path / 'no-such-dir' / 'out.yaml'}: cannot write file")

    code, _, err = run_import("json", good, tmp_path / "out.yaml")
    assert code == 1
    assert "unknown format 'json'" in err
