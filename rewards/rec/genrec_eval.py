"""Full-catalogue leave-one-out evaluation of a generative recommender by constrained beam search.

Protocol (also in docs/genrec.md):
- Split: ``rewards.rec.data.leave_one_out``: each user's last item is the test target, the one before
  the validation target; the history is everything before the target, cut to the most recent
  ``history_cap`` = 20 items (oldest first in the prompt).
- Candidates: the whole catalogue. Beam search runs over the prefix trie of every item's semantic ID
  (``TrieLogitsProcessor``), so each of the ``num_beams`` = 10 beams is a distinct, valid item; no
  negatives are sampled and items in the history are not removed (generative models may
  re-recommend them; the baselines are scored the same way).
- Ranking: beams ordered by their summed token log-probability (``length_penalty=0``; every ID has
  the same number of tokens anyway), greedy (no sampling). The target's rank is its beam position
  (1-based); a target outside the beams ranks > ``num_beams`` and counts as a miss, so
  ``max(ks) <= num_beams``. Ties between beam scores keep transformers' beam order (exact float ties
  essentially never happen); the baselines use the pessimistic tie rule of ``rewards.rec.metrics``.
- Metrics: Recall@k (= HR@k with one target) and NDCG@k = 1/log2(rank+1) within k, for k = 5, 10,
  averaged over users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rewards.rec.data import Example
from rewards.rec.metrics import hit_at_k, ndcg_at_k
from rewards.rec.semantic_ids import SemanticIndex
from rewards.rec.trie import CodeTrie, TrieLogitsProcessor

HISTORY_CAP = 20
NUM_BEAMS = 10

Prompt = str | list[dict[str, str]]


def genrec_prompt(history: Sequence[str], index: SemanticIndex, history_cap: int = HISTORY_CAP) -> list[dict[str, str]]:
    """The default chat prompt: the user's last ``history_cap`` items as semantic IDs, oldest first."""
    ids = ", ".join(index.id_string(i) for i in list(history)[-history_cap:] if i in index)
    return [{"role": "user", "content": f"The user bought, in order: {ids}. Recommend the next item."}]


def build_trie(index: SemanticIndex, tokenizer: Any) -> tuple[CodeTrie, dict[tuple[int, ...], str]]:
    """The trie of all item IDs (ending in the tokenizer's EOS) and token-sequence -> item."""
    seqs = index.token_sequences(tokenizer)
    return CodeTrie(seqs, eos_token_id=tokenizer.eos_token_id), {
        tuple(s): i for s, i in zip(seqs, index.items, strict=True)
    }


def _render(tokenizer: Any, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def constrained_beam_search(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    trie: CodeTrie,
    seq_to_item: dict[tuple[int, ...], str],
    num_beams: int = NUM_BEAMS,
    batch_size: int = 8,
) -> list[list[tuple[str, float]]]:
    """For each prompt, ``num_beams`` (item, summed log-prob) pairs, best first."""
    from transformers import GenerationConfig, LogitsProcessorList

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[list[tuple[str, float]]] = []
    for s in range(0, len(prompts), batch_size):
        rendered = [_render(tokenizer, p) for p in prompts[s : s + batch_size]]
        width = max(len(r) for r in rendered)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rendered], device=device)  # [B, L]
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rendered], device=device)
        config = GenerationConfig(
            max_new_tokens=trie.max_depth + 1,
            num_beams=num_beams,
            num_return_sequences=num_beams,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=True,
            eos_token_id=list(trie.eos_ids),
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_scores=True,
        )
        res = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            logits_processor=LogitsProcessorList([TrieLogitsProcessor(trie, width)]),
        )
        seqs = res.sequences[:, width:].tolist()  # [B*beams, T]
        scores = res.sequences_scores.tolist()  # [B*beams]
        for b in range(len(rendered)):
            beams = []
            for j in range(b * num_beams, (b + 1) * num_beams):
                item = seq_to_item.get(trie.strip_eos(seqs[j]))
                if item is not None and np.isfinite(scores[j]):
                    beams.append((item, float(scores[j])))
            out.append(beams)
    return out


def ranks_from_beams(beams: Sequence[Sequence[tuple[str, float]]], targets: Sequence[str]) -> np.ndarray:
    """1-based rank of each target in its beam list (first occurrence); ``inf`` when absent."""
    ranks = []
    for bl, t in zip(beams, targets, strict=True):
        items = [i for i, _ in bl]
        ranks.append(items.index(t) + 1.0 if t in items else np.inf)
    return np.asarray(ranks, dtype=np.float64)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    out: dict[str, float] = {"n": float(len(ranks))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(hit_at_k(ranks, k))) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.mean(ndcg_at_k(ranks, k))) if len(ranks) else 0.0
    return out


def evaluate_genrec(
    model: Any,
    tokenizer: Any,
    index: SemanticIndex,
    examples: Sequence[Example],
    *,
    num_beams: int = NUM_BEAMS,
    ks: Sequence[int] = (5, 10),
    history_cap: int = HISTORY_CAP,
    batch_size: int = 8,
    prompt_fn: Callable[[Sequence[str], SemanticIndex, int], Prompt] = genrec_prompt,
) -> dict[str, float]:
    """Recall@k / NDCG@k of ``model`` on ``examples`` (e.g. ``leave_one_out(data).test``)."""
    if max(ks) > num_beams:
        raise ValueError(f"ks {list(ks)} go beyond num_beams ({num_beams}); raise num_beams to at least {max(ks)}")
    trie, seq_to_item = build_trie(index, tokenizer)
    examples = [ex for ex in examples if ex.target.item in index]
    prompts = [prompt_fn([x.item for x in ex.history], index, history_cap) for ex in examples]
    was_training = model.training
    model.eval()
    try:
        beams = constrained_beam_search(model, tokenizer, prompts, trie, seq_to_item, num_beams, batch_size)
    finally:
        model.train(was_training)
    return metrics_from_ranks(ranks_from_beams(beams, [ex.target.item for ex in examples]), ks)
