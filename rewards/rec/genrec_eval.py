"""Full-catalogue evaluation of a generative recommender by constrained beam search.

The split, history cap, beam width and cut-offs are the caller's (``envs/genrec.py`` names two protocols,
``tiger`` and ``minionerec``; docs/genrec.md). What this module fixes:
- Candidates: the whole catalogue. Beam search runs over the prefix trie of every item's semantic ID
  (``TrieLogitsProcessor``), so each of the ``num_beams`` beams is a distinct, valid ID; no negatives are
  sampled and items in the history are not removed (generative models may re-recommend them; the
  baselines are scored the same way).
- Ranking is per *item*: beams ordered by their summed token log-probability (``length_penalty=0``;
  every ID has the same number of tokens anyway), greedy (no sampling), then mapped to items
  (``id_groups``: token sequence -> every item with that ID). An item named by an earlier beam is not
  counted again, and items sharing one ID (an index with collisions, e.g. reused from elsewhere) are tied:
  whichever of them is the target ranks last among them (the pessimistic tie rule of
  ``rewards.rec.metrics``), so a colliding ID cannot count as a top hit for several items at once. A
  target outside the beams ranks > ``num_beams`` and counts as a miss, so ``max(ks) <= num_beams``. Ties
  between beam scores keep transformers' beam order (exact float ties essentially never happen).
- Metrics: HR@k (called Recall@k by TIGER; the same number with one target) and NDCG@k =
  1/log2(rank+1) within k, averaged over examples; ``genrec_ranks`` gives the per-example ranks for
  paired comparisons (``rewards.rec.metrics.paired_bootstrap``).
"""

from __future__ import annotations

import logging
import sys
import time
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

logger = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]


HISTORY_LEAD = "The user bought, in order: "  # the prompt's text before the history's IDs


def genrec_prompt(
    history: Sequence[str], index: SemanticIndex, history_cap: int = HISTORY_CAP, item_tokens: bool = False
) -> list[dict[str, str]]:
    """The default chat prompt: the user's last ``history_cap`` items as semantic IDs, oldest first; with
    ``item_tokens`` each ID is followed by the item's own token (``SemanticIndex.item_token``)."""
    shown = [i for i in list(history)[-history_cap:] if i in index]
    ids = ", ".join(index.id_string(i) + (index.item_token(i) if item_tokens else "") for i in shown)
    return [{"role": "user", "content": f"{HISTORY_LEAD}{ids}. Recommend the next item."}]


def build_trie(index: SemanticIndex, tokenizer: Any) -> tuple[CodeTrie, dict[tuple[int, ...], str]]:
    """The trie of all item IDs (ending in the tokenizer's EOS) and token-sequence -> item (one item per ID;
    ``id_groups`` keeps every item of an ID that several share)."""
    seqs = index.token_sequences(tokenizer)
    return CodeTrie(seqs, eos_token_id=tokenizer.eos_token_id), {
        tuple(s): i for s, i in zip(seqs, index.items, strict=True)
    }


def id_groups(items: Sequence[str], seqs: Sequence[Sequence[int]]) -> dict[tuple[int, ...], tuple[str, ...]]:
    """Token sequence -> every item whose ID it spells (in ``items`` order): more than one item only
    when IDs collide. ``items[i]`` has the ID ``seqs[i]``."""
    out: dict[tuple[int, ...], tuple[str, ...]] = {}
    for item, seq in zip(items, seqs, strict=True):
        out[tuple(seq)] = (*out.get(tuple(seq), ()), str(item))
    return out


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
    progress: bool = False,
    desc: str = "beam search",
) -> list[list[tuple[Any, float]]]:
    """For each prompt, up to ``num_beams`` (``seq_to_item[ids]``, summed log-prob) pairs, best first:
    an item with ``build_trie``'s map, the group of items sharing the ID with ``id_groups``'.
    ``progress``: a tqdm bar over the batches on stderr."""
    from tqdm import tqdm
    from transformers import GenerationConfig, LogitsProcessorList

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[list[tuple[Any, float]]] = []
    starts = range(0, len(prompts), batch_size)
    for s in tqdm(starts, desc=desc, unit="batch", file=sys.stderr, disable=not progress, leave=False):
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


def item_rank(beams: Sequence[tuple[Any, float]], target: str) -> float:
    """1-based rank of ``target`` among the distinct items ``beams`` name, best beam first; ``inf`` when absent.

    A beam names one item (``str``) or the group of items sharing its ID (a tuple). Items named by an
    earlier beam are dropped, and a target that shares its ID with other items ranks after all of them
    (pessimistic ties): beams ``[("x", "t"), ("y",)]`` rank ``x`` and ``t`` 2nd, ``y`` 3rd.
    """
    seen: set[str] = set()
    ranked = 0
    for entry, _ in beams:
        group = (entry,) if isinstance(entry, str) else tuple(entry)
        new = [i for i in dict.fromkeys(group) if i not in seen]
        if target in new:
            return float(ranked + len(new))
        seen.update(new)
        ranked += len(new)
    return float("inf")


def ranks_from_beams(beams: Sequence[Sequence[tuple[Any, float]]], targets: Sequence[str]) -> np.ndarray:
    """``item_rank`` of each target in its beam list: ranks [N] (float, ``inf`` = not in the beams)."""
    return np.asarray([item_rank(bl, t) for bl, t in zip(beams, targets, strict=True)], dtype=np.float64)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = (5, 10), hit_name: str = "recall") -> dict[str, float]:
    """``{"n", "<hit_name>@k", "ndcg@k", ...}`` averaged over ``ranks``; ``hit_name`` is ``recall`` (TIGER's
    name) or ``hr`` (MiniOneRec's) for the same number."""
    out: dict[str, float] = {"n": float(len(ranks))}
    for k in ks:
        out[f"{hit_name}@{k}"] = float(np.mean(hit_at_k(ranks, k))) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(np.mean(ndcg_at_k(ranks, k))) if len(ranks) else 0.0
    return out


def genrec_ranks(
    model: Any,
    tokenizer: Any,
    index: SemanticIndex,
    examples: Sequence[Example],
    *,
    num_beams: int = NUM_BEAMS,
    history_cap: int = HISTORY_CAP,
    batch_size: int = 8,
    prompt_fn: Callable[[Sequence[str], SemanticIndex, int], Prompt] = genrec_prompt,
    progress: bool = False,
    desc: str = "beam search",
) -> np.ndarray:
    """Per-item rank of each example's target (``item_rank``) by constrained beam search: ranks [N] for the
    examples whose target is in ``index`` (the others are dropped), ``inf`` outside the beams."""
    examples = [ex for ex in examples if ex.target.item in index]
    prompts = [prompt_fn([x.item for x in ex.history], index, history_cap) for ex in examples]
    beams = genrec_beams(
        model, tokenizer, index, prompts, num_beams=num_beams, batch_size=batch_size, progress=progress, desc=desc
    )
    return ranks_from_beams(beams, [ex.target.item for ex in examples])


def genrec_beams(
    model: Any,
    tokenizer: Any,
    index: SemanticIndex,
    prompts: Sequence[Prompt],
    *,
    num_beams: int = NUM_BEAMS,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "beam search",
) -> list[list[tuple[tuple[str, ...], float]]]:
    """``constrained_beam_search`` over every item ID of ``index`` (the trie and the ID groups built from
    ``tokenizer``), with ``model`` in eval mode for the search: per prompt its beams, best first."""
    seqs = index.token_sequences(tokenizer)
    trie = CodeTrie(seqs, eos_token_id=tokenizer.eos_token_id)
    groups = id_groups(index.items, seqs)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        beams = constrained_beam_search(
            model, tokenizer, prompts, trie, groups, num_beams, batch_size, progress=progress, desc=desc
        )
    finally:
        model.train(was_training)
    logger.debug("%s: %d prompts, %d beams in %.1f s", desc, len(prompts), num_beams, time.perf_counter() - start)
    return beams


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
    hit_name: str = "recall",
    progress: bool = False,
) -> dict[str, float]:
    """Recall@k (or ``hit_name="hr"``: HR@k) / NDCG@k of ``model`` on ``examples`` (e.g. ``leave_one_out(data).test``)."""
    if max(ks) > num_beams:
        raise ValueError(f"ks {list(ks)} go beyond num_beams ({num_beams}); raise num_beams to at least {max(ks)}")
    ranks = genrec_ranks(
        model, tokenizer, index, examples, num_beams=num_beams, history_cap=history_cap, batch_size=batch_size,
        prompt_fn=prompt_fn, progress=progress,
    )  # fmt: skip
    return metrics_from_ranks(ranks, ks, hit_name)
