"""T2I generators: shapeworld, and a tiny random Stable Diffusion pipeline loaded through
``DiffusionPipeline.from_pretrained`` (the path FLUX/SD3/SDXL/PixArt checkpoints take)."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.t2i.generators import (
    DiffusersGenerator,
    ShapeworldGenerator,
    T2IGenerator,
    build_generator,
    build_tiny_sd_pipeline,
)
from rewards.t2i.shapeworld import render
from tests.helpers import requires_cuda


def _px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def sd_generator(tiny_sd):
    return DiffusersGenerator(str(tiny_sd), steps=2, batch_size=2, guidance_scale=1.0)


def test_shapeworld_generator_matches_render_and_is_a_t2i_generator():
    gen = build_generator("shapeworld", size=64)
    assert isinstance(gen, ShapeworldGenerator) and isinstance(gen, T2IGenerator)
    images = gen.generate(["one red dog", "two blue cats"], [3, 4])
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert np.array_equal(_px(images[0]), _px(render("one red dog", 3, 64)))
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        gen.generate(["a", "b"], [1])


def test_unknown_generator_and_bad_options_are_named(tiny_sd):
    with pytest.raises(ValueError, match="unknown T2I generator 'flux'; known: shapeworld, diffusers"):
        build_generator("flux")
    with pytest.raises(ValueError, match=r"dtype \('fp8'\).*steps \(0\).*height \(30\)"):
        DiffusersGenerator(str(tiny_sd), dtype="fp8", steps=0, height=30)


def test_tiny_sd_pipeline_makes_one_image_per_prompt(sd_generator):
    assert sd_generator.pipe.__class__.__name__ == "StableDiffusionPipeline"
    prompts = ["a red dog", "a blue cat", "two green cups", "a clock", "a bench"]
    images = sd_generator.generate(prompts, [0, 1, 2, 3, 4])  # batch_size 2: three pipeline calls
    assert len(images) == 5
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in images)


def test_seed_determinism(sd_generator):
    a = sd_generator.generate(["a red dog", "a red dog"], [7, 8])
    b = sd_generator.generate(["a red dog", "a red dog"], [7, 8])
    assert np.array_equal(_px(a[0]), _px(b[0])) and np.array_equal(_px(a[1]), _px(b[1]))  # same seed, same image
    assert np.abs(_px(a[0]) - _px(a[1])).max() > 20  # different seed, different image
    # One CPU generator per sample: an image does not depend on its batch neighbour's seed
    # (up to float rounding of a differently shaped batch).
    c = sd_generator.generate(["a red dog", "a blue cat"], [7, 99])
    assert np.abs(_px(a[0]) - _px(c[0])).max() <= 2


@requires_cuda("real-size SD 1.5 architecture")
def test_real_size_sd15_architecture_on_cuda(tmp_path):
    """SD 1.5's UNet/VAE/text-encoder shapes with random weights, fp16 on CUDA, 512x512."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from rewards.t2i.generators import write_tiny_clip_tokenizer

    tokenizer = write_tiny_clip_tokenizer(tmp_path / "tok")
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD 1.x's
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))  # fmt: skip
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=PNDMScheduler(),
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(tmp_path / "sd15")  # fmt: skip
    gen = DiffusersGenerator(str(tmp_path / "sd15"), dtype="float16", steps=2, device="cuda", batch_size=2)
    images = gen.generate(["a red dog", "a blue cat", "a clock"], [0, 1, 2])
    assert [im.size for im in images] == [(512, 512)] * 3
