"""Build a tiny Qwen2-architecture causal LM with a BPE tokenizer and a chat template.

Saved in the standard Hugging Face layout (``config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json`` with the chat template), so Relay loads it through
the same ``from_pretrained`` path as ``Qwen/Qwen2.5-0.5B-Instruct`` or any local checkpoint.
Everything is derived from the seed: the same seed gives byte-identical weights and tokenizer.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

# Qwen2-style ChatML. `continue_final_message` works with it (the rendered text of the last
# message is found and the end-of-turn after it dropped), which RePrompt's pre-filled turn needs.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Plain-text tags the built-in envs parse; kept as single tokens so a tiny policy can emit them.
TAG_TOKENS = [
    "<think>", "</think>", "<answer>", "</answer>",
    "<user_profile>", "</user_profile>", "<item_profile>", "</item_profile>",
    "<cue>", "</cue>", "<constructed_prompt>", "</constructed_prompt>", "<profile>", "</profile>",
    "<rating>", "</rating>",
]  # fmt: skip

_WORDS = (
    "a an the one two three four five six seven eight nine ten of and with on in at to left right above below "
    "side half top bottom middle image photo picture of red orange yellow green blue purple pink brown black white "
    "person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop sign parking meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket bottle wine glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot dog pizza donut cake chair couch potted plant "
    "bed dining table toilet tv laptop computer mouse remote keyboard cell phone microwave oven toaster sink "
    "refrigerator book clock vase scissors teddy bear hair drier toothbrush let me solve this step by step the user "
    "wants prompt write describe scene objects color count position answer think profile item likes buys reads "
    "science lab tools kit set pack measure test tube digital meter scale high quality rating review good great "
    "is are was be have has do does it this that for from by as or not but all any some many few more most very "
    "small large big little bright dark light clear detailed realistic style background foreground center corner"
).split()


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model; defaults run a GRPO step in well under a second on one CPU core."""

    vocab_size: int = 1024  # BPE merges stop here; the embedding matrix matches the trained tokenizer
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 1024
    # ~0.2 (not HF's 0.02) so that the random policy has peaked, input-dependent logits and LoRA
    # can move a dense reward within tens of GRPO steps.
    initializer_range: float = 0.2
    seed: int = 0


def _corpus(seed: int, n_lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), str(rng.randint(0, 99)))
        lines.append(" ".join(words) + rng.choice([".", ",", "!", "?", ":", ""]))
    return lines


def build_tokenizer(spec: TinyModelSpec):
    """A byte-level BPE tokenizer (any text encodes) trained on a seeded synthetic corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(TAG_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(spec.seed), trainer=trainer)
    tok.add_tokens(TAG_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a tiny Qwen2 causal LM + tokenizer to ``out_dir`` (created); returns the path."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    spec = spec or TinyModelSpec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(spec.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "relay_tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out


def cached_tiny_model(cache_root: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Build once per spec under ``cache_root`` (atomically: built in a temp dir, then renamed)."""
    import hashlib
    import os
    import shutil
    import tempfile

    spec = spec or TinyModelSpec()
    key = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:12]
    target = Path(cache_root) / f"tiny-{key}"
    if (target / "relay_tiny_spec.json").exists():
        return target
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_root))
    try:
        build_tiny_model(tmp, spec)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
