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

    def item_runs(self, ids: Any) -> list[tuple[str, int]]:
        """(item, position of its first code token) for every run of ``levels`` consecutive code tokens in
        ``ids`` (level 0 first) that spells an item, in order."""
        out, run = [], []
        for pos, t in enumerate(int(x) for x in ids):
            lc = self.code_of_token.get(t)
            if lc is None or lc[0] != len(run):
                run = [lc[1]] if lc is not None and lc[0] == 0 else []
            else:
                run.append(lc[1])
            if len(run) == self.levels:
                item = self.index.item_of(run)
                if item is not None:
                    out.append((item, pos - self.levels + 1))
                run = []
        return out

    def history_of(self, prompt_ids: Any) -> list[str]:
        """The items a prompt lists, oldest first."""
        return [item for item, _ in self.item_runs(prompt_ids)]

    def _code_marginals(self, p: np.ndarray, prefix: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """(child tokens, log m_T of each) at the trie node ``prefix`` for item probabilities ``p`` [N] in index
        order; None when the node is not in the trie or the teacher gives it no mass."""
        node = self.under[len(prefix)].get(prefix)
        if node is None:
            return None
        items, kids, slot = node
        mass = np.bincount(slot, weights=p[items], minlength=len(kids))  # [children]
        total = mass.sum()
        if total <= 0:
            return None
        with np.errstate(divide="ignore"):
            return kids, np.log(mass / total)

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
                if j < self.levels:
                    node = self._code_marginals(p, prefix)
                    if node is not None:
                        out[b, j, torch.as_tensor(node[0])] = torch.as_tensor(node[1], dtype=out.dtype)
                elif j == self.levels and prefix in self.complete:
                    out[b, j, self.eos] = 0.0
                if comp[j] == self.eos:
                    break  # the completion ended here: later positions are padding
        return out

    def forced_log_probs(self, input_ids: Any, vocab_size: int) -> Any:
        """Teacher-forced targets for a supervised loss: input_ids [B, T] -> [B, T, V], where row t holds log m_T
        of the token at t + 1 (aligned with a causal LM's logits at t) at every code of every item in the row
        that has an item before it, given the items before it in the same row as the history and the item's
        own earlier codes as the prefix; ``-inf`` elsewhere (no target)."""
        import torch

        ids = input_ids.detach().cpu().tolist()
        runs = [self.item_runs(row) for row in ids]  # [B][(item, start)]
        histories = [tuple(item for item, _ in r[:k]) for r in runs for k in range(1, len(r))]
        unique = list(dict.fromkeys(histories))
        row_of = {h: j for j, h in enumerate(unique)}
        logp = self.item_log_probs([list(h) for h in unique]) if unique else None  # [U, N]
        out = torch.full((len(ids), len(ids[0]) if ids else 0, vocab_size), float("-inf"))
        for b, r in enumerate(runs):
            for k in range(1, len(r)):
                p = np.exp(logp[row_of[tuple(item for item, _ in r[:k])]])  # [N]
                start = r[k][1]
                for j in range(self.levels):
                    node = self._code_marginals(p, tuple(ids[b][start : start + j]))
                    if node is not None and start + j >= 1:
                        out[b, start + j - 1, torch.as_tensor(node[0])] = torch.as_tensor(node[1], dtype=out.dtype)
        return out


def trie_teacher(tokenizer: Any, index_path: str | Path, teacher_path: str | Path | list[str]) -> TrieTeacher:
    """Factory for ``Env.token_teacher`` specs: the index and a saved ``SASRecBaseline`` (``teacher_path``), or
    the ensemble of several (a list of paths, ``rewards.rec.baselines.ScoreEnsemble``)."""
    from rewards.rec.baselines import load_teacher

    return TrieTeacher(SemanticIndex.load(index_path), tokenizer, load_teacher(teacher_path))
