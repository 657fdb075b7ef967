from env_server.agent.privacy import redact_private

HIDDEN = "She wants someone to admit the layoff was unfair and not tell her to update her CV"


def test_sentence_copying_hidden_intention_is_dropped() -> None:
    reply = "I'm so tired. I want someone to admit the layoff was unfair, honestly. Anyway."
    cleaned, redacted = redact_private(reply, [HIDDEN])
    assert redacted
    assert cleaned == "I'm so tired. Anyway."
    assert "admit the layoff was unfair" not in cleaned


def test_ordinary_reply_is_kept_whole() -> None:
    reply = "It was unfair. I don't know what to do with myself now."
    assert redact_private(reply, [HIDDEN]) == (reply, False)


def test_copied_thoughts_are_dropped() -> None:
    thoughts = "They jumped straight to advice before asking what happened to me."
    cleaned, redacted = redact_private("Wow. They jumped straight to advice before asking what happened.", [thoughts])
    assert redacted and cleaned == "Wow."


def test_chinese_copy_is_caught_by_characters() -> None:
    hidden = "希望有人能理解我为什么辞职了而不是劝我回去"
    cleaned, redacted = redact_private("我很难过。我其实只是希望有人能理解我为什么辞职了。", [hidden])
    assert redacted and cleaned == "我很难过。"


def test_everything_private_leaves_empty_text() -> None:
    cleaned, redacted = redact_private("I want someone to admit the layoff was unfair.", [HIDDEN])
    assert redacted and cleaned == ""
