"""Settings validation: a bad value is refused when the settings are read, naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from env_server.settings import Settings


def test_the_default_dtype_is_float32_for_exact_batches(monkeypatch) -> None:
    monkeypatch.delenv("ATTUNE_DTYPE", raising=False)
    assert Settings().dtype == "float32"


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_every_supported_dtype_is_accepted(dtype: str) -> None:
    assert Settings(dtype=dtype).dtype == dtype


def test_an_unsupported_dtype_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(dtype="float8")
    assert raised.value.errors()[0]["loc"] == ("dtype",)
    assert "bfloat16" in str(raised.value)  # the error lists what is accepted
