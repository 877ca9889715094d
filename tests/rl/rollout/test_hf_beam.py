"""HFEngine with ``SamplingParams(beam_search=True)`` (MiniOneRec's GRPO groups): n distinct beams per prompt,
ranked, constrained by the semantic-ID trie, with logprobs a plain forward pass reproduces.

The model is the tiny Qwen2 with the code tokens of a random 60-item semantic index (``coded_model``).
"""

from __future__ import annotations

import pytest
import torch

from rl.rollout.hf import HFEngine, trim_at_eos
from rl.rollout.types import Rollout, SamplingParams

LORA = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
PROMPTS = ["a plain text prompt", [{"role": "user", "content": "draw a red cat"}], "three"]
N = 4


def _trie_spec(index_path) -> list:
    return ["rewards.rec.trie:trie_constraint", {"index_path": str(index_path)}]


@pytest.fixture(scope="module")
def index(coded_model):
    from rewards.rec.semantic_ids import SemanticIndex

    return SemanticIndex.load(coded_model["index"])


@pytest.fixture(scope="module")
def model(coded_model):
    """The same weights as a plain transformers model: the learner's view of the policy."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(coded_model["dir"], dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def free(coded_model) -> HFEngine:
    return HFEngine(str(coded_model["dir"]), LORA, torch_threads=1)


@pytest.fixture(scope="module")
def constrained(coded_model) -> HFEngine:
    return HFEngine(
        str(coded_model["dir"]), LORA, torch_threads=1, logits_processors=[_trie_spec(coded_model["index"])]
    )


def _step_logprobs(model, r: Rollout) -> torch.Tensor:
    """log_softmax(logits) of the model at every completion position of ``r``: [C, V]."""
    ids = torch.tensor([r.prompt_ids + r.completion_ids])  # [1, P+C]
    with torch.no_grad():
        return model(ids).logits[0, len(r.prompt_ids) - 1 : -1].float().log_softmax(-1)  # [C, V]


def _groups(rollouts: list[Rollout], n: int) -> list[list[Rollout]]:
    return [rollouts[i : i + n] for i in range(0, len(rollouts), n)]


def test_beams_are_distinct_ranked_and_their_logprobs_match_a_forward_pass(free, model):
    """Unconstrained: n distinct completions per prompt, prompt-major, sample_index = rank, ranked by the
    summed logprob (descending); each logprob is log_softmax(logits) of the token, temperature 1."""
    rollouts = free.generate(PROMPTS, N, SamplingParams(max_new_tokens=6, beam_search=True), seeds=[0] * 12)
    assert [(r.prompt_index, r.sample_index) for r in rollouts] == [(p, s) for p in range(3) for s in range(N)]
    for group in _groups(rollouts, N):
        assert len({tuple(r.completion_ids) for r in group}) == N
        totals = [sum(r.logprobs) for r in group]
        assert totals == sorted(totals, reverse=True), totals
    for r in rollouts:
        assert r.prompt_ids == free.render(PROMPTS[r.prompt_index]) and r.version == -1
        body = r.completion_ids[:-1] if r.finish_reason == "stop" else r.completion_ids
        assert not set(body) & set(free.eos_ids) and (r.finish_reason == "stop" or len(body) == 6)
        expected = _step_logprobs(model, r).gather(1, torch.tensor(r.completion_ids)[:, None])[:, 0]  # [C]
        torch.testing.assert_close(torch.tensor(r.logprobs), expected, atol=1e-4, rtol=0)
    assert free.last_stats.rollouts == 12


def test_constrained_beams_are_valid_ids_with_constrained_logprobs(constrained, model, index):
    """With the trie: every beam spells a catalogue ID and ends in EOS; the recorded logprob of each token is
    log_softmax over the tokens the trie allows there (what the sampler records too); beams are ranked by the
    model's summed log-probability of the ID (the unconstrained one, as transformers and the eval rank them)."""
    from rewards.rec.trie import CodeTrie

    trie = CodeTrie(index.token_sequences(constrained.tokenizer), eos_token_id=constrained.tokenizer.eos_token_id)
    sampling = SamplingParams(max_new_tokens=index.levels + 1, beam_search=True)
    rollouts = constrained.generate(PROMPTS, 8, sampling, seeds=[0] * 24)
    for group in _groups(rollouts, 8):
        items = [index.item_of_text(r.text) for r in group]
        assert None not in items and len(set(items)) == 8, items
        totals = []
        for r in group:
            assert r.finish_reason == "stop" and trie.strip_eos(r.completion_ids) in trie
            logp = _step_logprobs(model, r)  # [C, V]
            allowed = torch.full_like(logp, float("-inf"))
            for t in range(len(r.completion_ids)):
                allowed[t, trie.allowed_next(r.completion_ids[:t])] = 0.0
            chosen = torch.tensor(r.completion_ids)[:, None]
            expected = (logp + allowed).log_softmax(-1).gather(1, chosen)[:, 0]  # [C] renormalised over the trie
            torch.testing.assert_close(torch.tensor(r.logprobs), expected, atol=1e-4, rtol=0)
            totals.append(float(logp.gather(1, chosen).sum()))
        assert totals == sorted(totals, reverse=True), totals


def test_beam_order_is_the_evaluations(constrained, model, index):
    """Rollout beams of the base policy name the same items in the same order as the genrec evaluation's
    constrained beam search (rewards.rec.genrec_eval), so rank-aware rewards see the eval's ranking."""
    from rewards.rec.genrec_eval import build_trie, constrained_beam_search

    chat = [[{"role": "user", "content": "draw a red cat"}], [{"role": "user", "content": "one two"}]]
    rollouts = constrained.generate(chat, 5, SamplingParams(max_new_tokens=index.levels + 1, beam_search=True))
    trie, seq_to_item = build_trie(index, constrained.tokenizer)
    beams = constrained_beam_search(model, constrained.tokenizer, chat, trie, seq_to_item, num_beams=5)
    assert [index.item_of_text(r.text) for r in rollouts] == [item for bl in beams for item, _ in bl]


def test_beams_do_not_depend_on_batching(coded_model, free):
    """batch_size = n rows: one prompt per generate call; the same beams as all prompts in one batch."""
    one_by_one = HFEngine(str(coded_model["dir"]), LORA, torch_threads=1, batch_size=N)
    sampling = SamplingParams(max_new_tokens=5, beam_search=True)
    a, b = free.generate(PROMPTS, N, sampling), one_by_one.generate(PROMPTS, N, sampling)
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    torch.testing.assert_close(
        torch.tensor([r.logprobs for r in a]), torch.tensor([r.logprobs for r in b]), atol=1e-4, rtol=0
    )


def test_fewer_valid_ids_than_beams_fails_clearly(coded_model, tmp_path):
    from tests.helpers import random_index

    path = random_index(n_items=3, sizes=(6, 5, 4)).save(tmp_path / "three.json")  # 3 items, code tokens known
    engine = HFEngine(str(coded_model["dir"]), LORA, torch_threads=1, logits_processors=[_trie_spec(path)])
    with pytest.raises(RuntimeError, match=r"fewer than n = 4 beams.*algorithm.num_generations"):
        engine.generate(PROMPTS[:1], 4, SamplingParams(max_new_tokens=4, beam_search=True))
    assert len(engine.generate(PROMPTS[:1], 3, SamplingParams(max_new_tokens=4, beam_search=True))) == 3


def test_trim_at_eos():
    assert trim_at_eos([5, 2, 9, 2], [2]) == ([5, 2], "stop")
    assert trim_at_eos([5, 9], [2, 3]) == ([5, 9], "length")


def test_beam_search_needs_temperature_one_and_no_truncation():
    for bad in ({"temperature": 0.7}, {"temperature": 0}, {"top_p": 0.9}, {"top_k": 5}):
        with pytest.raises(ValueError, match="beam_search ranks completions"):
            SamplingParams(max_new_tokens=4, beam_search=True, **bad)
    assert SamplingParams(max_new_tokens=4, beam_search=True).logprob_temperature == 1.0
