"""A sequential recommender as a token-level teacher for the semantic-ID policy (``algorithm.distill_coef``).

The policy spells an item as code tokens ``<a_i><b_j><c_k><d_n>``; a recommender (SASRec, trained on the
same training split) gives a distribution over whole items. Pushed through the ID trie, that distribution
gives each next code's marginal given the codes so far:

    m_T(c | prefix) = Σ_{items under prefix + c} p_T(item) / Σ_{items under prefix} p_T(item)

so Σ_t log m_T(c_t | c_<t) = log p_T(item): the token teacher is exactly the item teacher, factorised. The
learner (``rl.algos.distill``) tilts its reference policy by it at every completion position.

The user's history is read back from the prompt's own tokens (the code tokens of the items it lists), so the
teacher needs nothing beyond the token ids the learner already has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rewards.rec.semantic_ids import SemanticIndex


class TrieTeacher:
    """``log_probs(input_ids, logits_to_keep, vocab_size) -> [B, L, V]``: the teacher's log m_T of each next
    token at each completion position; ``-inf`` for tokens it gives no mass (and for every token after the
    completion has left the trie). After a complete ID the only token is EOS (log 1 = 0).

    ``teacher``: any object with ``catalog`` (item ids) and ``scores(histories) -> [B, len(catalog)]`` (e.g.
    ``rewards.rec.baselines.SASRecBaseline``); item probabilities are its softmax over the catalogue.
    """

    def __init__(self, index: SemanticIndex, tokenizer: Any, teacher: Any):
        self.index, self.teacher = index, teacher
        self.eos = int(tokenizer.eos_token_id)
        table = index.token_id_table(tokenizer)  # [level][code] -> token id
        self.levels = len(table)
        self.code_of_token = {int(t): (lvl, c) for lvl, row in enumerate(table) for c, t in enumerate(row)}
        self.tokens = np.asarray(index.token_sequences(tokenizer))  # [N, levels], index.items order
        column = {item: i for i, item in enumerate(teacher.catalog)}
        # teacher column of each index item (-1: the teacher does not know it, so it gets no mass)
        self.column = np.array([column.get(str(item), -1) for item in index.items])
        # per level: prefix (token tuple) -> (the items under it, its child tokens, each item's child slot),
        # fixed by the index, so a step only sums the teacher's mass per slot
        self.under: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        for lvl in range(self.levels):
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, row in enumerate(self.tokens[:, :lvl].tolist()):
                groups.setdefault(tuple(row), []).append(i)
            level = {}
            for prefix, members in groups.items():
                items = np.array(members)
                kids, slot = np.unique(self.tokens[items, lvl], return_inverse=True)
                level[prefix] = (items, kids, slot)
            self.under.append(level)
        self.complete = {tuple(row) for row in self.tokens.tolist()}

    def history_of(self, prompt_ids: Any) -> list[str]:
        """The items a prompt lists, oldest first: every run of ``levels`` consecutive code tokens, level 0 first."""
        items, run = [], []
        for t in (int(x) for x in prompt_ids):
            lc = self.code_of_token.get(t)
            if lc is None or lc[0] != len(run):
                run = [lc[1]] if lc is not None and lc[0] == 0 else []
            else:
                run.append(lc[1])
            if len(run) == self.levels:
                item = self.index.item_of(run)
                if item is not None:
                    items.append(item)
                run = []
        return items

    def item_log_probs(self, histories: list[list[str]]) -> np.ndarray:
        """log p_T(item | history) [B, N] in index order (``-inf`` for items the teacher does not know)."""
        from scipy.special import log_softmax

        scores = np.asarray(self.teacher.scores(histories), dtype=np.float64)  # [B, catalog]
        logp = log_softmax(scores, axis=1)
        out = np.full((len(histories), len(self.column)), -np.inf)
        known = self.column >= 0
        out[:, known] = logp[:, self.column[known]]
        return out

    def log_probs(self, input_ids: Any, logits_to_keep: int, vocab_size: int) -> Any:
        import torch

        ids = input_ids.detach().cpu()
        prompt_width = ids.shape[1] - logits_to_keep
        completions = ids[:, prompt_width:].tolist()  # [B][L]
        histories = [tuple(self.history_of(row[:prompt_width])) for row in ids.tolist()]
        unique = list(dict.fromkeys(histories))
        logp = self.item_log_probs([list(h) for h in unique])  # [U, N]
        row_of = {h: j for j, h in enumerate(unique)}
        out = torch.full((ids.shape[0], logits_to_keep, vocab_size), float("-inf"))
        for b, comp in enumerate(completions):
            p = np.exp(logp[row_of[histories[b]]])  # [N]
            for j in range(logits_to_keep):
                prefix = tuple(comp[:j])
                if j < self.levels and prefix in self.under[j]:
                    items, kids, slot = self.under[j][prefix]
                    mass = np.bincount(slot, weights=p[items], minlength=len(kids))  # [children]
                    total = mass.sum()
                    if total > 0:
                        with np.errstate(divide="ignore"):
                            out[b, j, torch.as_tensor(kids)] = torch.as_tensor(np.log(mass / total), dtype=out.dtype)
                elif j == self.levels and prefix in self.complete:
                    out[b, j, self.eos] = 0.0
                if comp[j] == self.eos:
                    break  # the completion ended here: later positions are padding
        return out


def trie_teacher(tokenizer: Any, index_path: str | Path, teacher_path: str | Path) -> TrieTeacher:
    """Factory for ``Env.token_teacher`` specs: the index and a saved ``SASRecBaseline`` (``teacher_path``)."""
    from rewards.rec.baselines import SASRecBaseline

    return TrieTeacher(SemanticIndex.load(index_path), tokenizer, SASRecBaseline.load(teacher_path))
