"""Tokens/s of trie-constrained vs unconstrained generation (goal: constrained <= 1.3x slower).

Builds (or reuses) a semantic index, adds its code tokens to a Qwen2 model of the given shape (the
tiny one by default: the worst case for a per-step processor, whose cost is fixed while the model's
shrinks), then times ``model.generate`` with and without ``TrieLogitsProcessor`` on the same prompts,
for sampling and for beam search. Both runs generate exactly ``depth + 1`` tokens per sequence
(EOS banned before the last step), so tokens/s compares per-step cost only. Runs alternate
and the median of ``--repeats`` is kept. Writes the "Constrained decoding" section of docs/benchmarks.md.

    python bench/constrained_decoding.py [--index runs/x/semantic_index.json] [--hidden 64 --layers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _synthetic_index(n_items: int, levels: int, k: int, seed: int):
    """Codes with the shape of a real index (first levels dense, an extra level for collisions)."""
    from rewards.rec.semantic_ids import SemanticIndex, disambiguate

    rng = np.random.default_rng(seed)
    base = rng.integers(0, k, size=(n_items, levels))
    codes = disambiguate(base)
    sizes = [k] * levels + ([int(codes[:, -1].max()) + 1] if codes.shape[1] > levels else [])
    return SemanticIndex([f"item{i}" for i in range(n_items)], codes, sizes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", help="a saved SemanticIndex JSON; default: synthetic 4344 items x 3 levels x 256")
    ap.add_argument("--items", type=int, default=4344)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beams", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from rewards.rec.genrec_eval import build_trie
    from rewards.rec.semantic_ids import SemanticIndex, add_code_tokens
    from rewards.rec.trie import TrieLogitsProcessor
    from rl.tiny_model import TinyModelSpec, cached_tiny_model

    index = SemanticIndex.load(args.index) if args.index else _synthetic_index(args.items, 3, 256, 0)
    heads = max(2, args.hidden // 32)
    spec = TinyModelSpec(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=heads,
                         num_key_value_heads=max(1, heads // 2), intermediate_size=args.hidden * 2)  # fmt: skip
    model_dir = cached_tiny_model(Path(tempfile.gettempdir()) / "relay-bench-models", spec)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    add_code_tokens(tok, model, index)
    model = model.to(args.device).eval()
    trie, seq_to_item = build_trie(index, tok)
    rng = np.random.default_rng(0)
    prompts = []
    for _ in range(args.batch):
        hist = rng.choice(index.items, size=10, replace=False)
        prompts.append("The user bought: " + ", ".join(index.id_string(i) for i in hist) + ". Next:")
    enc = tok(prompts, return_tensors="pt", padding=True).to(args.device)
    width = enc["input_ids"].shape[1]
    steps = trie.max_depth + 1

    def run(constrained: bool, mode: str) -> tuple[float, int, float]:
        kw = dict(do_sample=True) if mode == "sample" else dict(num_beams=args.beams, num_return_sequences=args.beams)
        procs = LogitsProcessorList([TrieLogitsProcessor(trie, width)] if constrained else [])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=steps, min_new_tokens=steps - 1, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id, logits_processor=procs, **kw)  # fmt: skip
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        gen = out[:, width:]
        valid = np.mean([seq_to_item.get(trie.strip_eos(r)) is not None for r in gen.tolist()])
        return dt, int(gen.numel()), float(valid)

    # min_new_tokens = steps - 1 bans EOS before the last step (the constrained run's last step allows
    # only EOS), so both runs return `steps` tokens per sequence.
    results = {}
    for mode in ("sample", "beam"):
        run(True, mode), run(False, mode)  # warm-up
        times = {True: [], False: []}
        valid = {}
        for _ in range(args.repeats):
            for c in (False, True):
                dt, n, v = run(c, mode)
                times[c].append(n / dt)
                valid[c] = v
        tps = {c: statistics.median(times[c]) for c in times}
        results[mode] = {
            "unconstrained_tok_s": tps[False],
            "constrained_tok_s": tps[True],
            "slowdown": tps[False] / tps[True],
            "valid_unconstrained": valid[False],
            "valid_constrained": valid[True],
        }
    print(json.dumps({"device": args.device, "hidden": args.hidden, "layers": args.layers, **results}, indent=1))
    if args.no_write:
        return
    from bench.common import write_section

    rows = "\n".join(
        f"| {m} | {r['unconstrained_tok_s']:.0f} | {r['constrained_tok_s']:.0f} | {r['slowdown']:.2f}x "
        f"| {r['valid_unconstrained']:.0%} | {r['valid_constrained']:.0%} |"
        for m, r in results.items()
    )
    body = f"""`bench/constrained_decoding.py`: `model.generate` with vs without `TrieLogitsProcessor`
(rewards/rec/trie.py), {len(index)} items, IDs of {trie.max_depth} tokens + EOS, {len(tok)} vocab,
Qwen2 hidden {args.hidden} x {args.layers} layers on {args.device}, batch {args.batch}
(beam: {args.beams} beams per prompt), median of {args.repeats} alternating runs; tokens counted per
returned sequence. Goal: constrained at most 1.3x slower.

| decoding | unconstrained tok/s | constrained tok/s | slowdown | valid IDs unconstrained | valid IDs constrained |
|---|---|---|---|---|---|
{rows}
"""
    write_section("Constrained decoding (semantic IDs)", body)


if __name__ == "__main__":
    main()
