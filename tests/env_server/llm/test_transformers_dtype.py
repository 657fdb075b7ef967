"""The transformers backend's dtype choice (fast: no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from env_server.llm.transformers_backend import DTYPES, resolve_dtype  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_a_named_dtype_is_kept_on_any_device(dtype: str) -> None:
    assert resolve_dtype(dtype, "cpu") == dtype
    assert resolve_dtype(dtype, "meta") == dtype


def test_auto_takes_bfloat16_only_where_the_cpu_multiplies_it_in_hardware() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("reads the CPU's flags from Linux's /proc/cpuinfo")
    amx = "amx_tile" in cpuinfo.read_text().split()
    assert resolve_dtype("auto", "cpu") == ("bfloat16" if amx else "float32")
    # A device it knows nothing about gets the exact choice.
    assert resolve_dtype("auto", "meta") == "float32"


def test_an_unknown_dtype_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype("float8", "cpu")
    assert "auto" in DTYPES
