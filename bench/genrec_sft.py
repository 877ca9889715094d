"""Does the generative recommender's SFT model use the history? One SFT warm start, then three checks.

    python bench/genrec_sft.py [--config configs/genrec.yaml] [--users 2000] [--out DIR] [dotted.key=value ...]

Runs the recipe's own prepare + SFT (``Env.prepare_model``, ``rl.learner.sft.warm_start``, with the overrides
given, e.g. the full data and an SFT budget), then on the first ``--users`` users of ``env.args.eval_split``:
- recall@10 / ndcg@10 by the recipe's constrained beam search, with each user's real history and with the
  *next* user's history (a control: a model that ignores the history scores the same on both), plus the
  paired bootstrap CI of real − other and popularity on the same users;
- how many distinct items the beams name over all users, and the share of users whose beams hold the most
  frequent one (a popularity model recommends the same few items to everyone);
- the mean probability the model gives the last history item's first code at the first answer token,
  beside how often the target really shares it (the simplest sequential signal there is).
Writes ``DIR/genrec_sft.json`` and the section "Genrec SFT: does it use the history" of docs/benchmarks.md
(``--docs`` elsewhere).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def first_code_probabilities(model, tokenizer, env, examples) -> tuple[float, float]:
    """(mean P(last history item's first code) at the first answer token, share of targets that share it)."""
    import torch

    from rl.learner.sft import render_prompt

    def first_code(item: str) -> int:
        return tokenizer.convert_tokens_to_ids(env.index.id_tokens(item)[0])

    mass, same = 0.0, 0
    with torch.inference_mode():
        for ex in examples:
            text = render_prompt(tokenizer, env.prompt(ex))
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
            probs = model(ids).logits[0, -1].softmax(-1)  # [V]
            last = first_code(ex.history[-1].item)
            mass += float(probs[last])
            same += last == first_code(ex.target.item)
    return mass / len(examples), same / len(examples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "genrec.yaml"))
    ap.add_argument("--users", type=int, default=2000, help="eval users (the first N of env.args.eval_split)")
    ap.add_argument("--out", default=None, help="run directory (default: a new temp dir)")
    ap.add_argument("--title", default="Genrec SFT: does it use the history", help="docs/benchmarks.md section")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"), help="where the section goes")
    ap.add_argument("overrides", nargs="*", help="dotted.key=value, as for relay train")
    args = ap.parse_args(argv)

    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.rec.baselines import PopularityBaseline, evaluate_scores
    from rewards.rec.genrec_eval import genrec_beams, metrics_from_ranks, ranks_from_beams
    from rewards.rec.metrics import paired_rank_difference
    from rl.base_model import resolve_model
    from rl.config import ConfigError, load_config
    from rl.learner.sft import warm_start
    from rl.preflight import preflight

    try:  # bad config, env args or data: the problems by field, exit 2 (as `relay train`)
        cfg = load_config(args.config, args.overrides)
        env = preflight(cfg).env
    except ConfigError as exc:
        print(f"genrec_sft: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="genrec-sft-"))
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    start = time.perf_counter()
    model_path = env.prepare_model(resolve_model(cfg, out), out)
    sft_dir = warm_start(cfg, env, model_path, out / "sft_model")
    sft_seconds = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    model = AutoModelForCausalLM.from_pretrained(sft_dir).eval()

    examples = env.eval_examples()[: args.users]  # targets all in the index
    n = len(examples)
    other = [dataclasses.replace(e, history=examples[(i + 1) % n].history) for i, e in enumerate(examples)]
    # One constrained beam search per history variant, as the eval runs it (genrec_ranks); the real
    # history's beams also give the distinct-items count.
    targets = [e.target.item for e in examples]
    beams, other_beams = (
        genrec_beams(
            model, tokenizer, env.index, [env.prompt(e) for e in exs], num_beams=env.args.num_beams, batch_size=64
        )
        for exs in (examples, other)
    )
    real_ranks, other_ranks = ranks_from_beams(beams, targets), ranks_from_beams(other_beams, targets)
    pop = PopularityBaseline(env.data.item_ids).fit(env.split.train)
    rows = {
        "popularity": evaluate_scores(pop.scores, examples, env.data.item_ids, ks=(10,), history_cap=None),
        "sft": metrics_from_ranks(real_ranks, (10,)),
        "sft, next user's history": metrics_from_ranks(other_ranks, (10,)),
    }
    diff = paired_rank_difference(real_ranks, other_ranks, ("recall@10", "ndcg@10"), seed=cfg.seed)
    counts = Counter(item for bl in beams for item, _ in bl)  # item groups (one item each without collisions)
    p_last, share_last = first_code_probabilities(model, tokenizer, env, examples)
    record = {
        "config": args.config,
        "overrides": args.overrides,
        "users": n,
        "sft_seconds": sft_seconds,
        "rows": rows,
        "real_minus_other": diff,
        "distinct_items_in_beams": len(counts),
        "top_item_user_share": counts.most_common(1)[0][1] / n,
        "p_last_first_code": p_last,
        "target_shares_last_first_code": share_last,
        "load_before": load,
        "load_after": os.getloadavg(),
    }
    (out / "genrec_sft.json").write_text(json.dumps(record, indent=1) + "\n")

    def cell(r: dict) -> str:
        return f"{r['recall@10']:.4f} / {r['ndcg@10']:.4f}"

    lo, hi = diff["ci95"]["recall@10"]
    body = "\n".join(
        [
            f"`python bench/genrec_sft.py --users {args.users} {' '.join(args.overrides)}` "
            f"(config {Path(args.config).name}, seed {cfg.seed}; {platform.machine()}, {os.cpu_count()} cores, "
            f"load {load[0]:.2f} -> {os.getloadavg()[0]:.2f}; prepare + SFT {sft_seconds / 60:.1f} min)",
            "",
            f"First {n} users of `{env.args.eval_split}`, constrained beam search ({env.args.num_beams} beams), "
            "recall@10 / ndcg@10:",
            "",
            "| row | recall@10 / ndcg@10 |",
            "|---|---|",
            *(f"| {k} | {cell(v)} |" for k, v in rows.items()),
            "",
            f"- real − next user's history, recall@10: {diff['recall@10']:+.4f} [{lo:+.4f}, {hi:+.4f}] (paired "
            "bootstrap 95% CI)",
            f"- distinct items in all users' beams: {len(counts)}; the most frequent is in "
            f"{record['top_item_user_share']:.0%} of users' beams",
            f"- P(last history item's first code) at the first answer token: {p_last:.4f}; the target shares "
            f"that code for {share_last:.1%} of users",
        ]
    )
    write_section(args.title, body, Path(args.docs))
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
