"""Per-sample reproducible sampling that does not depend on batching.

Each rollout gets its own seed (``sample_seed``). At every decoding step its row draws Gumbel noise
from a CPU ``torch.Generator`` seeded by (row seed, token position), adds it to the warped logits,
and decoding takes the argmax (``do_sample=False``): by the Gumbel-max trick that argmax is an exact
sample from softmax(warped logits). The noise a row sees depends only on its seed and position,
never on which other prompts share the batch or how much left padding it got, so a (seed, prompt)
pair gives the same completion alone, batched, or on another worker.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor

from rl.rollout.types import SamplingParams

_SEED_BITS = 63  # torch.Generator.manual_seed takes any int in [0, 2**64); stay clear of the sign bit


def _hash_seed(*parts: object) -> int:
    """A stable 63-bit hash (blake2b, not Python's per-process salted ``hash``)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << _SEED_BITS) - 1)


def sample_seed(base_seed: int, step: int, prompt_key: str | int, sample_index: int) -> int:
    """The seed of sample ``sample_index`` of prompt ``prompt_key`` at training step ``step``.

    ``prompt_key`` should identify the prompt itself (a dataset id or the prompt text), not its
    position in a batch, so the seed survives re-batching and re-sharding.
    """
    return _hash_seed("relay-sample", base_seed, step, prompt_key, sample_index)


def eval_seed(base_seed: int, step: int, prompt_index: int, sample_index: int) -> int:
    """The seed of a held-out eval sample (``eval.every_steps``): a stream of its own, never a training seed."""
    return _hash_seed("relay-eval", base_seed, step, prompt_index, sample_index)


def gumbel_noise(seeds: list[int], position: int, vocab_size: int) -> torch.Tensor:
    """Standard Gumbel noise, one independent stream per seed; row i depends on (seeds[i], position) only."""
    u = torch.empty(len(seeds), vocab_size, dtype=torch.float32)  # [B, V] uniforms in [0, 1)
    gen = torch.Generator(device="cpu")
    for row, seed in enumerate(seeds):
        gen.manual_seed(_hash_seed("relay-gumbel", seed, position))
        torch.rand(vocab_size, generator=gen, dtype=torch.float32, out=u[row])
    u.clamp_(min=torch.finfo(torch.float32).tiny)  # avoid log(0)
    return -torch.log(-torch.log(u))


def apply_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Mask (to -inf) everything below the k-th largest logit of each row. logits: [B, V]."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest prefix of tokens (by probability) whose mass reaches top_p. logits: [B, V]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability mass strictly above each token
    drop_sorted = mass_before >= top_p
    drop_sorted[:, 0] = False  # always keep the most likely token
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def warp(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p (vLLM's and transformers' order). logits: [B, V] float32."""
    scaled = logits / sampling.temperature
    return apply_top_p(apply_top_k(scaled, sampling.top_k), sampling.top_p)


class SeededGumbelSampler(LogitsProcessor):
    """Turns greedy decoding into seeded categorical sampling and records the chosen tokens' logprobs.

    Must be the only logits processor (the engine passes a clean GenerationConfig), so the scores it
    receives are the model's raw logits and its argmax is the token ``generate`` picks. It records
    ``log_softmax(raw / temperature)`` at that token at every step, which avoids keeping the full
    [B, T, V] logits that ``output_logits=True`` would return.
    """

    def __init__(self, seeds: list[int], prompt_length: int, sampling: SamplingParams):
        self.seeds = list(seeds)
        self.prompt_length = prompt_length  # padded prompt length: position = current length - this
        self.sampling = sampling
        self.chosen: list[torch.Tensor] = []  # T x [B]
        self.logprobs: list[torch.Tensor] = []  # T x [B]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] != len(self.seeds):
            raise ValueError(f"SeededGumbelSampler got {scores.shape[0]} rows but has {len(self.seeds)} seeds")
        position = input_ids.shape[1] - self.prompt_length
        raw = scores.float()  # [B, V]
        if self.sampling.greedy:
            perturbed = raw
        else:
            noise = gumbel_noise(self.seeds, position, raw.shape[-1]).to(raw.device)  # [B, V]
            perturbed = warp(raw, self.sampling) + noise
        chosen = perturbed.argmax(dim=-1)  # [B]
        logp = torch.log_softmax(raw / self.sampling.logprob_temperature, dim=-1)  # [B, V]
        self.chosen.append(chosen)
        self.logprobs.append(logp.gather(-1, chosen[:, None])[:, 0])
        return perturbed

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen ids [B, T], logprobs [B, T]) for every step taken."""
        return torch.stack(self.chosen, dim=1), torch.stack(self.logprobs, dim=1)
