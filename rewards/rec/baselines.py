"""Baselines for the generative recommender, on the same leave-one-out split and full-catalogue protocol.

- ``PopularityBaseline``: scores every item by its interaction count in the training part.
- ``SASRecBaseline``: SASRec (Kang & McAuley 2018), a causal Transformer over the last
  ``max_len`` items, trained with full-softmax cross-entropy on next-item prediction at every
  position of each user's training sequence, early-stopped on validation NDCG@10. A compact torch
  implementation: RecBole 1.2.1 (the well-kept library) does not install cleanly here (it pins
  ``ray<=2.6.3``, ``colorlog==4.7.2``, and uses ``np.float``, removed in numpy 2).

``evaluate_scores`` ranks the target among *all* catalogue items (no sampled negatives) with the
pessimistic tie rule of ``rewards.rec.metrics`` and returns Recall@k (= HR@k for one target) and
NDCG@k. History items are not removed from the ranking by default, as in the generative evaluation
(``exclude_history=True`` gives the RecBole convention).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rewards.rec.data import Example, Interaction
from rewards.rec.metrics import Ties, batch_rank_of_target, hit_at_k, ndcg_at_k

HISTORY_CAP = 20  # most recent items a model sees (LC-Rec / MiniOneRec use 20 / 10)


def _history(ex: Example, cap: int) -> list[str]:
    return [x.item for x in ex.history][-cap:]


def evaluate_scores(
    score_fn: Callable[[list[list[str]]], np.ndarray],
    examples: Sequence[Example],
    catalog: Sequence[str],
    ks: Sequence[int] = (5, 10),
    ties: Ties = "pessimistic",
    history_cap: int = HISTORY_CAP,
    exclude_history: bool = False,
    batch_size: int = 512,
) -> dict[str, float]:
    """Full-catalogue metrics: ``score_fn(histories) -> scores [B, len(catalog)]``."""
    pos = {item: i for i, item in enumerate(catalog)}
    ranks = []
    for s in range(0, len(examples), batch_size):
        batch = [ex for ex in examples[s : s + batch_size] if ex.target.item in pos]
        if not batch:
            continue
        hists = [_history(ex, history_cap) for ex in batch]
        scores = np.array(score_fn(hists), dtype=np.float64)  # [B, N]
        target = np.array([pos[ex.target.item] for ex in batch])
        if exclude_history:
            for b, h in enumerate(hists):
                idx = [pos[i] for i in h if i in pos and i != batch[b].target.item]
                scores[b, idx] = -np.inf
        ranks.append(batch_rank_of_target(scores, target, ties))
    r = np.concatenate(ranks) if ranks else np.zeros(0)
    out: dict[str, float] = {"n": float(len(r))}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(hit_at_k(r, k))) if len(r) else 0.0
        out[f"ndcg@{k}"] = float(np.mean(ndcg_at_k(r, k))) if len(r) else 0.0
    return out


class PopularityBaseline:
    """Score = number of training interactions with the item (the same list for every user)."""

    def __init__(self, catalog: Sequence[str]):
        self.catalog = list(catalog)
        self.counts = np.zeros(len(self.catalog))

    def fit(self, train: Mapping[str, Sequence[Interaction]]) -> PopularityBaseline:
        c = Counter(x.item for seq in train.values() for x in seq)
        self.counts = np.array([c.get(i, 0) for i in self.catalog], dtype=np.float64)
        return self

    def scores(self, histories: list[list[str]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.catalog)))


class SASRec(nn.Module):
    """Item + position embeddings -> causal pre-norm Transformer -> dot product with item embeddings."""

    def __init__(
        self,
        num_items: int,
        max_len: int = HISTORY_CAP,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.max_len, self.heads = max_len, heads
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)  # 0 = padding; item i -> i + 1
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.item.weight, std=0.02)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] (left-padded with 0) -> hidden states [B, L, D]."""
        length = seq.shape[1]
        x = self.item(seq) * math.sqrt(self.item.embedding_dim) + self.pos(torch.arange(length, device=seq.device))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)  # [L, L]
        # Causal and no padding keys; every position may see itself, so no row is all-masked (no NaN).
        blocked = causal[None] | (seq == 0)[:, None, :]  # [B, L, L]
        blocked[:, torch.arange(length), torch.arange(length)] = False
        mask = blocked.repeat_interleave(self.heads, dim=0)  # [B*heads, L, L]
        h = self.encoder(self.drop(x), mask=mask)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., D] -> scores over real items [..., num_items]."""
        return h @ self.item.weight[1:].T


@dataclass
class SASRecConfig:
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = HISTORY_CAP
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 40
    patience: int = 5  # epochs without a better validation NDCG@10
    seed: int = 0
    max_seconds: float | None = None  # stop training after this wall time


class SASRecBaseline:
    def __init__(self, catalog: Sequence[str], config: SASRecConfig | None = None):
        self.catalog = list(catalog)
        self.pos = {item: i + 1 for i, item in enumerate(self.catalog)}
        self.cfg = config or SASRecConfig()
        torch.manual_seed(self.cfg.seed)
        c = self.cfg
        self.model = SASRec(len(self.catalog), c.max_len, c.dim, c.layers, c.heads, c.dropout)
        self.log: list[dict[str, Any]] = []

    def _encode(self, items: Sequence[str], length: int) -> list[int]:
        ids = [self.pos[i] for i in items if i in self.pos][-length:]
        return [0] * (length - len(ids)) + ids

    def _training_pairs(self, train: Mapping[str, Sequence[Interaction]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [U, L] and next-item targets [U, L] (0 = no loss), one row per window of each sequence."""
        L = self.cfg.max_len
        xs, ys = [], []
        for seq in train.values():
            ids = [self.pos[x.item] for x in seq if x.item in self.pos]
            for end in range(len(ids), 1, -L):  # cover long sequences with windows of L targets
                window = ids[max(0, end - L - 1) : end]
                x, y = window[:-1], window[1:]
                xs.append([0] * (L - len(x)) + x)
                ys.append([0] * (L - len(y)) + y)
        return torch.tensor(xs), torch.tensor(ys)

    def fit(self, train: Mapping[str, Sequence[Interaction]], valid: Sequence[Example] = ()) -> SASRecBaseline:
        c = self.cfg
        gen = torch.Generator().manual_seed(c.seed)
        x, y = self._training_pairs(train)
        opt = torch.optim.Adam(self.model.parameters(), lr=c.lr)
        best, best_state, bad, start = -1.0, None, 0, time.perf_counter()
        for epoch in range(c.max_epochs):
            self.model.train()
            order = torch.randperm(len(x), generator=gen)
            total = 0.0
            for s in range(0, len(x), c.batch_size):
                idx = order[s : s + c.batch_size]
                h = self.model.hidden(x[idx])  # [B, L, D]
                mask = y[idx] > 0
                loss = nn.functional.cross_entropy(self.model.logits(h[mask]), y[idx][mask] - 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            row: dict[str, Any] = {"epoch": epoch, "loss": total / len(x)}
            if valid:
                m = evaluate_scores(self.scores, valid, self.catalog, ks=(10,))
                row["valid_ndcg@10"] = m["ndcg@10"]
                if m["ndcg@10"] > best:
                    best, bad = m["ndcg@10"], 0
                    best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
                else:
                    bad += 1
            self.log.append(row)
            if valid and bad >= c.patience:
                break
            if c.max_seconds is not None and time.perf_counter() - start > c.max_seconds:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self

    @torch.no_grad()
    def scores(self, histories: list[list[str]]) -> np.ndarray:
        self.model.eval()
        seq = torch.tensor([self._encode(h, self.cfg.max_len) for h in histories])  # [B, L]
        h = self.model.hidden(seq)[:, -1]  # [B, D] the last position (left padding)
        return self.model.logits(h).numpy()


def run_baselines(
    data: Any, sasrec: SASRecConfig | None = None, ks: Sequence[int] = (5, 10)
) -> dict[str, dict[str, float]]:
    """Popularity and SASRec on ``leave_one_out(data)``: test metrics (SASRec early-stopped on valid)."""
    from rewards.rec.data import leave_one_out

    split = leave_one_out(data)
    catalog = data.item_ids
    out = {"popularity": evaluate_scores(PopularityBaseline(catalog).fit(split.train).scores, split.test, catalog, ks)}
    start = time.perf_counter()
    model = SASRecBaseline(catalog, sasrec).fit(split.train, split.valid)
    out["sasrec"] = {
        **evaluate_scores(model.scores, split.test, catalog, ks),
        "train_seconds": time.perf_counter() - start,
        "epochs": float(len(model.log)),
    }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rewards.rec.baselines path/X.inter.json``: print test Recall/NDCG@5/10 as JSON."""
    import argparse
    import json

    from rewards.rec.data import load_lcrec

    ap = argparse.ArgumentParser(description="Popularity and SASRec baselines, leave-one-out, full catalogue")
    ap.add_argument("inter", help="LC-Rec X.inter.json")
    ap.add_argument("--max-epochs", type=int, default=SASRecConfig.max_epochs)
    ap.add_argument("--max-seconds", type=float, default=None)
    args = ap.parse_args(argv)
    cfg = SASRecConfig(max_epochs=args.max_epochs, max_seconds=args.max_seconds)
    print(json.dumps(run_baselines(load_lcrec(args.inter), cfg), indent=1))


if __name__ == "__main__":
    main()
