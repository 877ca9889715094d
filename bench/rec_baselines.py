"""Popularity vs SASRec on a recommendation data set, TIGER's protocol (leave-one-out, full ranking).

    OMP_NUM_THREADS=1 python bench/rec_baselines.py DATA.inter.json [--format p5 --item-path ITEMS]
        [--max-epochs 300 --patience 10 --device cuda --seed 0 --json]
        [--signal-embeddings EMB.npy --group-size 8 --signal-k 50]

Prints the data line, the protocol line, SASRec's epochs / best epoch / wall time, and the table of
test Recall@5/10 and NDCG@5/10. SASRec uses RecBole's defaults (``rewards.rec.baselines.SASRecConfig``)
and logs one line per epoch to stderr. Without the ``--signal-*`` options it is the same as
``python -m rewards.rec.baselines``.

``--signal-embeddings EMB.npy`` (item embeddings [N, D], rows in the data's item order, e.g. MiniLM over
the item texts) adds the *reward signal* table: for each test user, ``--group-size`` items are sampled
from three stand-in policies (uniform over the catalogue, popularity-proportional, SASRec's softmax at
temperature 1), as a GRPO group would be, and scored with the math of the genrec rewards: rule (hit),
similarity (``GenRecSimilarityReward``: cosine to the target) and neighbour rank
(``GenRecNeighbourRankReward``: NDCG@k of the target among the sampled item's neighbours). A group
whose rewards are all equal gives GRPO no advantage; the table shows how many groups each reward
leaves flat, and whether its mean orders the policies as recall does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.rec.baselines import main  # noqa: E402
from rewards.rec.genrec_rewards import cosine_of_pairs, neighbour_rank_credit  # noqa: E402


def group_stats(rewards: np.ndarray) -> dict[str, float]:
    """rewards [U, G] -> mean, share of groups not flat (max > min), mean within-group std."""
    return {
        "mean": float(rewards.mean()),
        "informative_groups": float((rewards.max(1) > rewards.min(1) + 1e-9).mean()),
        "group_std": float(rewards.std(1).mean()),
    }


def reward_signal(samples: np.ndarray, target: np.ndarray, emb: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    """samples [U, G] item rows, target [U], emb [N, D] L2-normalised -> stats per reward."""
    u, g = samples.shape
    flat, tgt = samples.reshape(-1), np.repeat(target, g)  # [U*G]
    rule = (flat == tgt).astype(np.float64).reshape(u, g)
    sim = cosine_of_pairs(emb, flat, tgt).reshape(u, g)
    nbr = np.concatenate(
        [neighbour_rank_credit(emb, flat[s : s + 4096], tgt[s : s + 4096], k) for s in range(0, len(flat), 4096)]
    ).reshape(u, g)
    return {"rule": group_stats(rule), "similarity": group_stats(sim), f"neighbour@{k}": group_stats(nbr)}


def sample_policies(models: dict, group: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Items [U, G] sampled for each test user by the uniform, popularity and SASRec policies; targets [U]."""
    import torch

    data, split, pop, sas = models["data"], models["split"], models["popularity"], models["sasrec"]
    pos = {item: i for i, item in enumerate(data.item_ids)}
    test = [ex for ex in split.test if ex.target.item in pos]
    target = np.array([pos[ex.target.item] for ex in test])
    rng = np.random.default_rng(seed)
    n = len(pos)
    out = {"uniform": rng.integers(0, n, size=(len(test), group))}
    p = pop.counts / pop.counts.sum()
    out["popularity"] = rng.choice(n, size=(len(test), group), p=p)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for s in range(0, len(test), 1024):
        logits = torch.from_numpy(sas.scores([[x.item for x in ex.history] for ex in test[s : s + 1024]]))
        rows.append(torch.multinomial(torch.softmax(logits.double(), 1), group, replacement=True, generator=gen))
    out["sasrec"] = torch.cat(rows).numpy()
    return out, target


def run() -> None:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--signal-embeddings", default=None)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--signal-k", type=int, default=50)
    ap.add_argument("--signal-seed", type=int, default=0)
    a, rest = ap.parse_known_args()
    models: dict = {}
    main(rest, models=models)
    if a.signal_embeddings is None:
        return
    emb = np.load(a.signal_embeddings).astype(np.float32)
    if len(emb) != models["data"].num_items:
        sys.exit(
            f"--signal-embeddings {a.signal_embeddings}: {len(emb)} rows, but the data has "
            f"{models['data'].num_items} items; give one row per item in the data's item order"
        )
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    samples, target = sample_policies(models, a.group_size, a.signal_seed)
    print(
        f"\nreward signal: {len(target)} test users x {a.group_size} samples per policy (seed {a.signal_seed}); "
        "'informative' = groups whose rewards are not all equal"
    )
    print("| policy | reward | mean | informative groups | mean within-group std |\n|---|---|---|---|---|")
    for policy, items in samples.items():
        for reward, st in reward_signal(items, target, emb, a.signal_k).items():
            print(
                f"| {policy} | {reward} | {st['mean']:.4f} | {st['informative_groups']:.3f} | {st['group_std']:.4f} |"
            )


if __name__ == "__main__":
    run()
