"""Text-to-image generators behind one protocol: ``generate(prompts, seeds) -> list[PIL.Image]``.

* ``ShapeworldGenerator`` — the procedural CPU stand-in (``rewards.t2i.shapeworld.render``).
* ``DiffusersGenerator`` — any ``diffusers.DiffusionPipeline.from_pretrained`` checkpoint (FLUX.1,
  SD3, SDXL, PixArt-Sigma, SD 1.5, or a local path): one ``torch.Generator`` per sample, so an
  image depends only on (prompt, seed), never on its batch neighbours' seeds.

``build_generator("shapeworld" | "diffusers", **kwargs)`` builds one from config.
``build_tiny_sd_pipeline(path)`` writes a tiny randomly initialised Stable Diffusion pipeline
(real classes, random weights) for tests and CPU smoke runs; it loads back through
``DiffusionPipeline.from_pretrained`` like any hub checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from rewards.t2i.shapeworld import render

logger = logging.getLogger(__name__)


@runtime_checkable
class T2IGenerator(Protocol):
    """Makes one image per (prompt, seed); the same pair always gives the same image."""

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]: ...


def _check_lengths(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    if len(prompts) != len(seeds):
        raise ValueError(f"generate: {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")


class ShapeworldGenerator:
    """shapeworld's renderer: deterministic, CPU-only, ~1 ms per image."""

    def __init__(self, size: int = 128):
        if size < 32:
            raise ValueError(f"ShapeworldGenerator: size ({size}) must be >= 32 pixels")
        self.size = size

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        _check_lengths(prompts, seeds)
        return [render(p, int(s), self.size) for p, s in zip(prompts, seeds, strict=True)]


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; anything else is passed to torch as is."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device ({device!r}) asks for CUDA but torch sees no GPU; use device='cpu' or 'auto'")
    return device


_DTYPES = ("float32", "float16", "bfloat16")


class DiffusersGenerator:
    """A diffusers pipeline loaded once; prompts go through it ``batch_size`` at a time.

    ``guidance_scale``/``height``/``width`` left as None use the pipeline's own defaults (FLUX.1-schnell
    wants guidance 0; SD 1.5 7.5). ``pipeline_kwargs`` go to every call (e.g. ``max_sequence_length``),
    ``load_kwargs`` to ``from_pretrained`` (e.g. ``variant="fp16"``).
    """

    def __init__(
        self,
        model: str,
        dtype: str = "float32",
        steps: int = 4,
        guidance_scale: float | None = None,
        height: int | None = None,
        width: int | None = None,
        device: str = "cpu",
        batch_size: int = 4,
        pipeline_kwargs: dict[str, Any] | None = None,
        load_kwargs: dict[str, Any] | None = None,
    ):
        import torch
        from diffusers import DiffusionPipeline

        problems = []
        if dtype not in _DTYPES:
            problems.append(f"dtype ({dtype!r}) must be one of {', '.join(_DTYPES)}")
        if steps < 1:
            problems.append(f"steps ({steps}) must be >= 1")
        if batch_size < 1:
            problems.append(f"batch_size ({batch_size}) must be >= 1")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (value < 8 or value % 8):
                problems.append(f"{name} ({value}) must be a positive multiple of 8 (or None for the default)")
        if problems:
            raise ValueError("DiffusersGenerator: " + "; ".join(problems))
        self.model = model
        self.device = resolve_device(device)
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.height, self.width = height, width
        self.batch_size = batch_size
        self.pipeline_kwargs = dict(pipeline_kwargs or {})
        self.pipe = DiffusionPipeline.from_pretrained(model, dtype=getattr(torch, dtype), **(load_kwargs or {}))
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def _call_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"num_inference_steps": self.steps, "output_type": "pil", **self.pipeline_kwargs}
        for key, value in (("guidance_scale", self.guidance_scale), ("height", self.height), ("width", self.width)):
            if value is not None:
                kw[key] = value
        return kw

    def generate(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        import torch

        _check_lengths(prompts, seeds)
        images: list[Image.Image] = []
        kw = self._call_kwargs()
        # Generators live on the CPU for every device: the initial noise is then identical across
        # devices and batch sizes (pipelines draw latents with randn_tensor(generator=...)).
        for start in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[start : start + self.batch_size])
            gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[start : start + self.batch_size]]
            with torch.inference_mode():
                out = self.pipe(prompt=chunk, generator=gens, **kw)
            images.extend(img.convert("RGB") for img in out.images)
        return images


GENERATORS = {"shapeworld": ShapeworldGenerator, "diffusers": DiffusersGenerator}


def build_generator(name_or_kind: str, **kwargs: Any) -> T2IGenerator:
    """``"shapeworld"`` or ``"diffusers"`` (with that class's kwargs)."""
    if name_or_kind not in GENERATORS:
        raise ValueError(f"unknown T2I generator {name_or_kind!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name_or_kind](**kwargs)


# ---------------------------------------------------------------- tiny random models (tests, smoke runs)

_TINY_WORDS = (
    "a an the one two three photo picture image of and with on in left right top bottom side half red orange "
    "yellow green blue purple pink brown black white dog cat car cup clock bird person bench chair tree sky"
).split()


def write_tiny_clip_tokenizer(out_dir: str | Path, model_max_length: int = 77):
    """A CLIPTokenizer over letters plus a few whole words (vocab.json + merges.txt), saved to ``out_dir``."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?-")
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in _TINY_WORDS:  # merge each word left to right, so every listed word is one token
        piece = word[0]
        for k, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if k == len(word) - 1 else "")
            merge = f"{piece} {right}"
            piece = piece + right
            if merge not in merges:
                merges.append(merge)
            if piece not in tokens:
                tokens.append(piece)
    # Specials last, as in CLIP's vocab: OWL-ViT/OWLv2 treat a query whose first id is 0 as padding.
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=model_max_length)
    return tokenizer


def build_tiny_sd_pipeline(out_dir: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Write a tiny random Stable Diffusion pipeline (UNet2DConditionModel, AutoencoderKL,
    CLIPTextModel + CLIPTokenizer, EulerDiscreteScheduler) to ``out_dir``; images are ``sample_size``
    pixels square (latents at a quarter of that)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    tok_dir = out / "_tokenizer_src"
    tokenizer = write_tiny_clip_tokenizer(tok_dir)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=EulerDiscreteScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    return out
