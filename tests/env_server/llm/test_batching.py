"""The batch scheduler over plain Python batch functions, and the batched transformers model (slow: real SmolLM2)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from env_server.llm import batching
from env_server.llm.batching import BatchScheduler


class Recorder:
    """A batch function that records its batches and answers ``request * 10``; optionally slow or failing."""

    def __init__(self, *, sleep_s: float = 0.0, fail_on=lambda request: False) -> None:
        self.batches: list[list[int]] = []
        self.started: list[float] = []
        self.threads: list[str] = []
        self.sleep_s, self.fail_on = sleep_s, fail_on

    def __call__(self, requests: list[int]) -> list[int]:
        self.started.append(time.monotonic())
        self.threads.append(threading.current_thread().name)
        self.batches.append(list(requests))
        time.sleep(self.sleep_s)
        if any(self.fail_on(request) for request in requests):
            raise ValueError(f"cannot answer {requests}")
        return [request * 10 for request in requests]


async def submit_after(scheduler: BatchScheduler, n: int, delay: float) -> int:
    """Submit ``n`` after ``delay`` seconds, as a request arriving late."""
    await asyncio.sleep(delay)
    return await scheduler.submit(n)


def lone_wait(scheduler: BatchScheduler, run: Recorder) -> float:
    """Seconds a lone request waited before its batch started."""

    async def main() -> float:
        submitted = time.monotonic()
        assert await scheduler.submit(7) == 70
        return submitted

    submitted = asyncio.run(main())
    return run.started[0] - submitted


def test_exports() -> None:
    assert batching.__all__ == ["BatchScheduler"]


@pytest.mark.parametrize(("size", "wait"), [(0, 0.01), (2, -1.0)])
def test_rejects_bad_limits(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="max_batch_size|max_wait_s"):
        BatchScheduler(Recorder(), max_batch_size=size, max_wait_s=wait)


def test_batches_only_requests_with_the_same_key() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, key=lambda request: request % 2, max_batch_size=16, max_wait_s=0.02)

    async def main() -> list[int]:
        return await asyncio.gather(*(scheduler.submit(n) for n in range(8)))

    assert asyncio.run(main()) == [n * 10 for n in range(8)]
    assert sorted(map(sorted, run.batches)) == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_a_full_group_is_split_into_batches_of_max_size() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=2, max_wait_s=0.02)

    async def main() -> list[int]:
        return await asyncio.gather(*(scheduler.submit(n) for n in range(5)))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1], [2, 3], [4]]


def test_max_batch_size_one_runs_every_request_alone_in_order() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=1, max_wait_s=10.0)

    async def main() -> list[int]:
        return await asyncio.gather(*(scheduler.submit(n) for n in range(4)))

    started = time.monotonic()
    assert asyncio.run(main()) == [0, 10, 20, 30]
    assert run.batches == [[0], [1], [2], [3]]
    assert time.monotonic() - started < 5.0  # a batch of one never waits for company


def test_a_lone_request_waits_max_wait_then_runs() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=8, max_wait_s=0.2)

    waited = lone_wait(scheduler, run)
    assert 0.2 <= waited < 2.0


def test_a_full_batch_does_not_wait() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=2, max_wait_s=30.0)

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(scheduler.submit(1), scheduler.submit(2)), timeout=10)

    assert asyncio.run(main()) == [10, 20]
    assert run.batches == [[1, 2]]


def test_requests_arriving_within_the_wait_share_a_batch() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=8, max_wait_s=0.3)

    async def main() -> list[int]:
        return await asyncio.gather(
            submit_after(scheduler, 1, 0.0), submit_after(scheduler, 2, 0.05), submit_after(scheduler, 3, 0.1)
        )

    assert asyncio.run(main()) == [10, 20, 30]
    assert run.batches == [[1, 2, 3]]


def test_a_burst_keeps_its_batch_open_while_requests_keep_arriving_within_the_gap() -> None:
    # Arrivals 25 ms apart span 125 ms, past the 100 ms gap, yet none of them comes 100 ms after the one before.
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=16, max_wait_s=5.0, gap_s=0.1)

    async def main() -> list[int]:
        return await asyncio.gather(
            *(submit_after(scheduler, n, 0.025 * n) for n in range(6)), submit_after(scheduler, 9, 1.0)
        )

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50, 90]
    assert run.batches == [[0, 1, 2, 3, 4, 5], [9]]  # the straggler came after a quiet gap


def test_a_lone_request_waits_only_the_gap() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=8, max_wait_s=30.0, gap_s=0.05)

    waited = lone_wait(scheduler, run)
    assert 0.05 <= waited < 5.0


def test_max_wait_caps_a_batch_that_keeps_growing() -> None:
    # A request every 20 ms (gap 100 ms) would keep the batch open forever; max_wait runs it after 150 ms.
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=64, max_wait_s=0.15, gap_s=0.1)

    async def main() -> list[int]:
        return await asyncio.gather(*(submit_after(scheduler, n, 0.02 * n) for n in range(40)))

    assert asyncio.run(main()) == [10 * n for n in range(40)]
    assert len(run.batches) >= 2 and 0 in run.batches[0] and 39 not in run.batches[0]


@pytest.mark.parametrize("gap", [-0.1, 0.5])
def test_rejects_a_gap_outside_zero_to_max_wait(gap: float) -> None:
    with pytest.raises(ValueError, match="gap_s"):
        BatchScheduler(Recorder(), max_wait_s=0.2, gap_s=gap)


def test_requests_arriving_while_a_batch_runs_gather_into_the_next() -> None:
    run = Recorder(sleep_s=0.3)
    scheduler = BatchScheduler(run, max_batch_size=8, max_wait_s=0.001)

    async def main() -> list[int]:
        return await asyncio.gather(
            submit_after(scheduler, 0, 0.0),
            submit_after(scheduler, 1, 0.05),
            submit_after(scheduler, 2, 0.1),
            submit_after(scheduler, 3, 0.15),
        )

    assert asyncio.run(main()) == [0, 10, 20, 30]
    assert run.batches == [[0], [1, 2, 3]]


def test_a_failing_batch_fails_its_requests_only() -> None:
    run = Recorder(fail_on=lambda request: request < 0)
    scheduler = BatchScheduler(run, key=lambda request: request < 0, max_batch_size=8, max_wait_s=0.01)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(scheduler.submit(n) for n in (1, -1, 2, -2)), return_exceptions=True)

    first, bad, second, worse = asyncio.run(main())
    assert (first, second) == (10, 20)
    assert isinstance(bad, ValueError) and bad is worse
    with pytest.raises(ValueError, match=r"cannot answer \[-3\]"):
        asyncio.run(scheduler.submit(-3))
    assert asyncio.run(scheduler.submit(4)) == 40  # the scheduler goes on


def test_a_wrong_number_of_results_is_an_error() -> None:
    scheduler = BatchScheduler(lambda requests: [0], max_batch_size=4, max_wait_s=0.01)

    async def main() -> None:
        await asyncio.gather(scheduler.submit(1), scheduler.submit(2))

    with pytest.raises(ValueError, match="returned 1 results for 2 requests"):
        asyncio.run(main())


def test_the_event_loop_keeps_running_while_a_batch_runs() -> None:
    run = Recorder(sleep_s=0.3)
    scheduler = BatchScheduler(run, max_batch_size=4, max_wait_s=0.001, thread_name="test-worker")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> int:
        task = asyncio.create_task(ticker())
        result = await scheduler.submit(5)
        task.cancel()
        return result

    assert asyncio.run(main()) == 50
    # 0.3 s of blocking work at 10 ms a tick: a blocked loop would tick about once.
    assert ticks >= 10
    assert run.threads[0].startswith("test-worker") and run.threads[0] != threading.current_thread().name


def test_a_cancelled_request_is_dropped_and_the_rest_still_run() -> None:
    run = Recorder(sleep_s=0.2)
    scheduler = BatchScheduler(run, max_batch_size=8, max_wait_s=0.001)

    async def main() -> list[int | BaseException]:
        first = asyncio.create_task(scheduler.submit(0))  # runs alone and keeps the worker busy
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(scheduler.submit(1))
        kept = asyncio.create_task(scheduler.submit(2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        return await asyncio.gather(first, doomed, kept, return_exceptions=True)

    first, doomed, kept = asyncio.run(main())
    assert (first, kept) == (0, 20) and isinstance(doomed, asyncio.CancelledError)
    assert run.batches == [[0], [2]]


def test_set_up_runs_on_the_thread_that_runs_the_batches() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=4, max_wait_s=0.01, thread_name="attune-test")
    set_up = scheduler.run_on_worker(lambda: threading.current_thread().name)
    assert set_up.startswith("attune-test") and set_up != threading.current_thread().name
    assert asyncio.run(scheduler.submit(1)) == 10
    assert run.threads == [set_up]
    with pytest.raises(ZeroDivisionError):  # its error reaches the caller
        scheduler.run_on_worker(lambda: 1 / 0)


def test_serves_successive_event_loops() -> None:
    run = Recorder()
    scheduler = BatchScheduler(run, max_batch_size=4, max_wait_s=0.01)
    assert asyncio.run(scheduler.submit(1)) == 10
    assert asyncio.run(scheduler.submit(2)) == 20


def test_aclose_lets_running_requests_finish_then_refuses_new_ones() -> None:
    run = Recorder(sleep_s=0.1)
    scheduler = BatchScheduler(run, max_batch_size=4, max_wait_s=0.01)

    async def main() -> list[int]:
        pending = [asyncio.create_task(scheduler.submit(n)) for n in (1, 2)]
        await asyncio.sleep(0)
        await scheduler.aclose()
        assert run.batches == [[1, 2]]  # answered before aclose returned
        with pytest.raises(RuntimeError, match="closed"):
            await scheduler.submit(3)
        return [task.result() for task in pending]

    assert asyncio.run(main()) == [10, 20]


def test_generations_batch_by_token_budget_and_scorings_together() -> None:
    from env_server.llm.transformers_backend import _batch_key, _Generate, _Score

    messages = [{"role": "user", "content": "hi"}]
    generate, score = _Generate(messages, 8, 3, "So"), _Score(messages, "I feel", [" ok"])
    assert _batch_key(generate) == ("generate", 8) != _batch_key(generate._replace(max_new_tokens=9))
    assert _batch_key(generate) == _batch_key(generate._replace(seed=4, remember=True))
    assert _batch_key(score) == ("score",) == _batch_key(score._replace(remember=True))


def test_choices_that_begin_alike_share_tree_nodes() -> None:
    from env_server.llm.transformers_backend import _ChoiceTree

    # Token ids stand for words: 1 " much", 2 " worse", 3 " better", 4 " a", 5 " little".
    tree = _ChoiceTree([[1, 2], [2], [4, 5, 2], [4, 5, 3], [1, 3]])
    assert tree.tokens == [1, 2, 2, 4, 5, 2, 3, 3]
    assert [tree.tokens[n] for n in tree.inner] == [1, 4, 5]  # only these need a distribution after them
    assert tree.depth[tree.paths[3][-1]] == 2
    assert tree.is_ancestor_or_self(tree.paths[2][0], tree.paths[2][2])
    assert not tree.is_ancestor_or_self(tree.paths[0][0], tree.paths[2][1])
    first = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), -1)
    rest = torch.log_softmax(torch.arange(18.0).reshape(3, 6), -1)  # after " much", " a", " a little"
    scores = tree.scores(first, rest)
    assert scores[0] == pytest.approx((first[1] + rest[0, 2]).item() / 2)
    assert scores[1] == pytest.approx(first[2].item())
    assert scores[3] == pytest.approx((first[4] + rest[1, 5] + rest[2, 3]).item() / 3)


@pytest.mark.parametrize("choices", [[], [" ok", ""]])
def test_the_model_refuses_empty_choices_before_they_join_a_batch(choices: list[str]) -> None:
    from env_server.llm.transformers_backend import TransformersChatModel

    fake = SimpleNamespace(scheduler=SimpleNamespace(submit=None))  # never reached
    with pytest.raises(ValueError, match="at least one choice"):
        asyncio.run(TransformersChatModel.score(fake, [{"role": "user", "content": "hi"}], "I feel", choices))


PROMPTS = [
    ([{"role": "user", "content": "Say something about the weather."}], ""),
    (
        [
            {"role": "system", "content": "You are Mia, a tired night-shift nurse."},
            {"role": "user", "content": "How was your shift today? Tell me honestly what happened."},
        ],
        "",
    ),
    ([{"role": "user", "content": "Hi"}], "Well,"),
    (
        [
            {"role": "user", "content": "Write a haiku about cats."},
            {"role": "assistant", "content": "Soft paws in the sun"},
            {"role": "user", "content": "Another one please, about a dog, the rain and a long walk home."},
        ],
        "",
    ),
    ([{"role": "user", "content": "What is 2+2?"}], "The answer"),
    ([{"role": "system", "content": "You are a grumpy old man."}, {"role": "user", "content": "Nice day?"}], ""),
]


# Identical results are a float32 property: bfloat16 rounds every product to 8 bits, so a batch's other kernel
# blocking moves near-ties of the logits (see test_bfloat16_batches_agree_with_unbatched_within_its_rounding).
@pytest.fixture(scope="module", params=[True, False], ids=["prompts by row", "prompts padded"])
def smollm2(request):
    """Batches of up to 8, their prompts computed a row at a time (the CPU's way) or as one padded batch (a GPU's)."""
    from env_server.llm.transformers_backend import TransformersChatModel

    return TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=8, prompts_by_row=request.param)


@pytest.fixture(scope="module")
def plain():
    """The same model unbatched and without a prefix cache: every call computes its whole prompt alone."""
    from env_server.llm.transformers_backend import TransformersChatModel

    return TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=1, prefix_cache_tokens=0)


async def generate_together(model) -> list[str]:
    """Every prompt of PROMPTS at once (seeded by its index), so that they can share a batch."""
    calls = (model.generate(m, max_new_tokens=24, seed=s, prefix=p) for s, (m, p) in enumerate(PROMPTS))
    return await asyncio.gather(*calls)


async def generate_one_by_one(model) -> list[str]:
    """The same prompts and seeds, each finished before the next is sent."""
    return [await model.generate(m, max_new_tokens=24, seed=s, prefix=p) for s, (m, p) in enumerate(PROMPTS)]


def batch_sizes(model) -> list[int]:
    """Wraps the model's batch function to record the size of every batch it runs."""
    sizes, run = [], model.scheduler.run_batch

    def recording(requests):
        sizes.append(len(requests))
        return run(requests)

    model.scheduler.run_batch = recording
    return sizes


@pytest.mark.slow
def test_the_model_is_loaded_and_packed_on_the_thread_that_runs_its_batches(monkeypatch) -> None:
    # torch keeps a team of OpenMP threads per calling thread; a second one (the loader's) slowed every later step.
    from env_server.llm import transformers_backend
    from env_server.llm.transformers_backend import TransformersChatModel

    threads: list[str] = []
    real_pack = transformers_backend.pack_linears

    def recording_pack(model) -> int:
        threads.append(threading.current_thread().name)
        return real_pack(model)

    monkeypatch.setattr(transformers_backend, "pack_linears", recording_pack)
    model = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=2, pack_weights=True)
    sizes = batch_sizes(model)
    run = model.scheduler.run_batch

    def recording_run(requests):
        threads.append(threading.current_thread().name)
        return run(requests)

    model.scheduler.run_batch = recording_run
    asyncio.run(model.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2, seed=0))
    assert sizes == [1] and len(threads) == 2
    assert threads[0] == threads[1] and threads[0].startswith("attune-model")


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_batched_generation_equals_unbatched(smollm2, plain, temperature: float) -> None:
    # Greedy must be identical; sampling is seeded per row, so it matches the single-request draws too.
    smollm2.temperature = plain.temperature = temperature
    try:
        sizes = batch_sizes(smollm2)
        batched = asyncio.run(generate_together(smollm2))
        alone = asyncio.run(generate_one_by_one(plain))
    finally:
        smollm2.scheduler.run_batch = smollm2._run_batch
        smollm2.temperature = plain.temperature = 0.0
    assert sizes == [len(PROMPTS)]
    assert all(text.strip() for text in batched)
    assert batched == alone


@pytest.mark.slow
def test_the_decoding_loop_writes_what_transformers_generate_writes(smollm2, plain) -> None:
    # The reference is transformers' own ``generate`` (greedy, the same repetition penalty) on each prompt
    # alone; ours decodes all of them in one padded batch.
    from env_server.llm.transformers_backend import _REPETITION_PENALTY

    batched = asyncio.run(generate_together(smollm2))
    tokenizer = plain.tokenizer
    for (messages, prefix), text in zip(PROMPTS, batched, strict=True):
        prompt = torch.tensor([plain._prompt_ids(messages) + plain._text_ids(prefix)])
        with torch.inference_mode():
            out = plain.model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=24,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                repetition_penalty=_REPETITION_PENALTY,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        assert text == tokenizer.decode(out[0, prompt.shape[1] :], skip_special_tokens=True)


def forward_shapes(model, chats: list[list[dict[str, str]]]) -> list[tuple[int, int]]:
    """The (rows, tokens) of every model pass while ``chats`` generate together (greedy, 4 tokens)."""
    shapes: list[tuple[int, int]] = []
    forward = model.model.forward

    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    async def together() -> list[str]:
        return await asyncio.gather(*(model.generate(chat, max_new_tokens=4, seed=0) for chat in chats))

    model.model.forward = recording
    try:
        asyncio.run(together())
    finally:
        del model.model.forward
    return shapes


@pytest.mark.slow
def test_uneven_prompts_run_by_row_and_even_ones_padded_then_the_rows_decode_together(smollm2) -> None:
    # One long prompt among short ones: padding all rows to the long one computes far more tokens than running each
    # alone (on a CPU). Prompts of one length have no padding to save, and a lone pass reads every weight again.
    long = [{"role": "user", "content": "I keep going over what she said at dinner. " * 30}]
    uneven = [long] + [messages for messages, _ in PROMPTS[:3]]
    even = [[{"role": "user", "content": f"Say something kind, number {n}."}] for n in range(4)]
    shapes = forward_shapes(smollm2, uneven)
    if smollm2.prompts_by_row:
        assert [rows for rows, _ in shapes[:4]] == [1, 1, 1, 1]
        assert shapes[0][1] > 200 and all(length < 100 for _, length in shapes[1:4])  # each its own length
        steps = shapes[4:]
    else:
        assert shapes[0][0] == 4 and shapes[0][1] > 200
        steps = shapes[1:]
    assert steps and all(shape == (4, 1) for shape in steps)
    shapes = forward_shapes(smollm2, even)
    assert shapes[0][0] == 4 and all(shape == (4, 1) for shape in shapes[1:])


@pytest.mark.slow
def test_batched_scores_equal_unbatched(smollm2, plain) -> None:
    from env_server.llm.prompts import FEELING_CHOICES, FEELING_PREFIX

    labels = [label for label, _ in FEELING_CHOICES]
    requests = [
        (messages, FEELING_PREFIX if index % 2 else "I feel", labels if index != 3 else [" ok", " not ok at all"])
        for index, (messages, _) in enumerate(PROMPTS)
    ]
    sizes = batch_sizes(smollm2)
    try:

        async def together() -> list[list[float]]:
            return await asyncio.gather(*(smollm2.score(*request) for request in requests))

        batched = asyncio.run(together())
    finally:
        smollm2.scheduler.run_batch = smollm2._run_batch
    alone = [read_alone(plain, *request) for request in requests]
    assert sizes == [len(requests)]
    for got, want in zip(batched, alone, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def read_alone(model, messages, prefix, choices) -> list[float]:
    """Each choice's mean token log-probability from one plain forward pass over prompt + choice."""
    prompt = model._prompt_ids(messages) + model._text_ids(prefix)
    scores = []
    for choice in choices:
        tail = model._text_ids(choice)
        with torch.inference_mode():
            logits = model.model(input_ids=torch.tensor([prompt + tail])).logits[0]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores.append(sum(logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(tail)) / len(tail))
    return scores


@pytest.mark.slow
def test_bfloat16_batches_agree_with_unbatched_within_its_rounding() -> None:
    # bfloat16 (what ``auto`` picks on a CPU with AMX) keeps 8 bits of each hidden state, and a padded batch runs
    # other kernels than a lone prompt, so its scores move by a few hundredths; they must move by no more.
    from env_server.llm.prompts import FEELING_CHOICES, FEELING_PREFIX
    from env_server.llm.transformers_backend import TransformersChatModel

    batched = TransformersChatModel(dtype="bfloat16", temperature=0.0, max_batch_size=8)
    alone = TransformersChatModel(dtype="bfloat16", temperature=0.0, max_batch_size=1, prefix_cache_tokens=0)
    assert batched.model.dtype == torch.bfloat16
    # Its logits come from a float32 copy of the head; the input embeddings it was tied to stay 16-bit.
    assert batched.model.get_output_embeddings().weight.dtype == torch.float32
    assert batched.model.get_input_embeddings().weight.dtype == torch.bfloat16
    labels = [label for label, _ in FEELING_CHOICES]

    async def together() -> list[list[float]]:
        return await asyncio.gather(*(batched.score(messages, FEELING_PREFIX, labels) for messages, _ in PROMPTS))

    sizes = batch_sizes(batched)
    got = asyncio.run(together())
    assert sizes == [len(PROMPTS)]
    want = [read_alone(alone, messages, FEELING_PREFIX, labels) for messages, _ in PROMPTS]
    gaps = [abs(g - w) for row, other in zip(got, want, strict=True) for g, w in zip(row, other, strict=True)]
    assert max(gaps) < 0.3, gaps  # measured: 0.04 on average, 0.15 at most
    texts = asyncio.run(generate_together(batched))
    lone = asyncio.run(generate_one_by_one(alone))
    assert all(text.strip() for text in texts)
    # Greedy text may part where two tokens are near-tied (measured: 5 of 6 prompts identical), not everywhere.
    assert sum(a == b for a, b in zip(texts, lone, strict=True)) >= len(PROMPTS) // 2
