"""Adapter-only vs merged full-weight sync for a model with the shape of Qwen2.5-0.5B.

    python bench/adapter_sync.py [--workers 2] [--repeats 3] [--dtype bfloat16]

The model is built locally from a ``Qwen2Config`` with Qwen2.5-0.5B's shape (hidden 896, 24
layers, 14 heads / 2 KV heads, intermediate 4864, vocab 151936, tied embeddings) and random
weights; LoRA r=16 on q/k/v/o/gate/up/down. N real Ray actors each hold their own copy.

- adapter-only (Relay's path): ``lora_state_dict`` of the learner -> one ``ray.put`` -> every
  worker ``set_peft_model_state_dict`` (exactly ``RolloutPool.sync_adapter`` / ``HFEngine.load_adapter``);
- merged: the learner merges LoRA into the base weights (``merge_adapter``), puts the full state
  dict once, unmerges; every worker copies it into its plain (LoRA-free) model, as a merged-weight
  engine (e.g. vLLM without LoRA support) needs.

Seconds run from "the learner has new weights" to "every worker has loaded them" (ray.get of
all loads), median of ``--repeats``. Bytes are the payload put into the object store once (each
worker then reads it; on one node that is shared memory, across nodes it crosses the network
once per worker). Writes the "Adapter sync" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import local_cluster, write_section  # noqa: E402

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qwen25_05b_shape(dtype: str):
    """A Qwen2ForCausalLM with Qwen2.5-0.5B's shape and random weights (no download)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                         intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768)  # fmt: skip
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model = model.to_empty(device="cpu").to(getattr(torch, dtype))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.tie_weights()
    return model.eval()


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))


class SyncTarget:
    """A rollout-side copy of the model: with LoRA (adapter sync) or plain (merged sync)."""

    def __init__(self, mode: str, dtype: str):
        import torch

        torch.set_num_threads(1)
        self.mode = mode
        model = qwen25_05b_shape(dtype)
        self.model = with_lora(model) if mode == "adapter" else model

    def ready(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def load_adapter(self, tensors) -> float:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, tensors)
        return float(next(v for k, v in tensors.items()).float().sum())

    def load_merged(self, state) -> float:
        import torch

        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(state[name])
        return float(self.model.model.embed_tokens.weight[0].detach().float().sum())


def merged_state(peft_model) -> dict:
    """Base weights with LoRA merged in, keyed like the plain model's named_parameters."""
    base = peft_model.get_base_model()
    return {n.replace(".base_layer", ""): p.detach() for n, p in base.named_parameters() if "lora_" not in n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    opts = parser.parse_args()

    import ray
    import torch

    from rl.adapter import lora_state_dict, tensors_nbytes

    torch.set_num_threads(1)
    load = os.getloadavg()
    learner = with_lora(qwen25_05b_shape(opts.dtype))
    with torch.no_grad():  # a trained adapter: B != 0, so merging changes the weights
        for n, p in learner.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    n_params = sum(p.numel() for n, p in learner.named_parameters() if "lora_" not in n)
    results = {}
    with local_cluster():
        Target = ray.remote(num_cpus=1)(SyncTarget)
        for mode in ("adapter", "merged"):
            workers = [Target.remote(mode, opts.dtype) for _ in range(opts.workers)]
            ray.get([w.ready.remote() for w in workers])
            times, nbytes = [], 0
            for _ in range(opts.repeats + 1):  # the first round warms up the object store and code paths
                t0 = time.perf_counter()
                if mode == "adapter":
                    payload = lora_state_dict(learner)
                    ref = ray.put(payload)
                    ray.get([w.load_adapter.remote(ref) for w in workers])
                else:
                    learner.merge_adapter()
                    payload = merged_state(learner)
                    ref = ray.put(payload)
                    learner.unmerge_adapter()
                    ray.get([w.load_merged.remote(ref) for w in workers])
                times.append(time.perf_counter() - t0)
                nbytes = tensors_nbytes(payload)
                del payload, ref
            results[mode] = (statistics.median(times[1:]), nbytes)
            for w in workers:
                ray.kill(w)
            del workers

    (t_a, b_a), (t_m, b_m) = results["adapter"], results["merged"]
    lora_dtype = str(next(p for n, p in learner.named_parameters() if "lora_A" in n).dtype).removeprefix("torch.")
    table = (
        "| sync | bytes put (once) | seconds to all workers (median) |\n|---|---|---|\n"
        f"| adapter-only (Relay), LoRA tensors in {lora_dtype} | {b_a / 2**20:.1f} MiB | {t_a:.3f} |\n"
        f"| merged full weights in {opts.dtype} | {b_m / 2**20:.1f} MiB | {t_m:.3f} |\n"
        f"| **ratio merged / adapter** | **{b_m / b_a:.1f}x** | **{t_m / t_a:.1f}x** |\n"
    )
    body = (
        f"`python bench/adapter_sync.py --workers {opts.workers} --repeats {opts.repeats} --dtype {opts.dtype}` "
        f"on {os.cpu_count()} CPU cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start. "
        f"Qwen2.5-0.5B shape ({n_params / 1e6:.0f}M base parameters, random weights), LoRA r=16 on q/k/v/o/gate/up/down, "
        f"{opts.workers} Ray rollout actors on one node, one torch thread each. Base weights in {opts.dtype} "
        "to fit the shared 23 GiB machine (fp32 would double the merged bytes and roughly its seconds); "
        "peft keeps the LoRA tensors in fp32.\n\n"
        f"{table}\n"
        "Merged seconds include the learner's merge + unmerge (it must keep training the unmerged adapter). "
        "On one node the workers read the object from shared memory; across nodes each worker pulls the "
        "payload over the network, so the byte ratio is what scales with the number of nodes.\n"
    )
    print(body)
    write_section("Adapter sync: adapter-only vs merged (bench/adapter_sync.py)", body)


if __name__ == "__main__":
    main()
