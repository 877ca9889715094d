"""ImageReward end to end: <answer> -> generator -> scorers against the ORIGINAL prompt; loaded by
registry name (a class, instantiated once per process) and hosted in a real Ray RewardPool."""

from __future__ import annotations

import json

import pytest

from envs.reprompt import build_messages, build_rows, generate_training_prompts
from rewards.pool import RewardPool, RewardSpec
from rewards.registry import check_reward, load_reward
from rewards.t2i.generators import build_tiny_sd_pipeline
from rewards.t2i.geneval import geneval_reward, ideal_rewrite, prompt_seed
from rewards.t2i.image_reward import ImageReward
from rewards.t2i.scorers import ClipScorer, build_tiny_clip

SHAPEWORLD = {"generator": {"kind": "shapeworld"}, "scorer": {"name": "composition", "detector": "pixel"}}


def _completion(answer: str | None) -> str:
    return "Let me think.</think>" + (f"<answer>{answer}</answer>" if answer is not None else " no answer here")


@pytest.fixture(scope="module")
def batch():
    """8 GenEval-style prompts, each with an ideal rewrite, the raw prompt copied, and no answer."""
    items = generate_training_prompts(8, seed=11)
    rows = build_rows(items)
    prompts, completions, metadata, seeds = [], [], [], []
    for item, row in zip(items, rows, strict=True):
        for answer in (ideal_rewrite(item["metadata"]), item["prompt"], None):
            prompts.append(row["prompt"])
            completions.append([{"role": "assistant", "content": _completion(answer)}])
            metadata.append(row["metadata"])
            seeds.append(row["seed"])
    return {"prompts": prompts, "completions": completions, "metadata": metadata, "seed": seeds}


def test_shapeworld_image_reward_equals_geneval_reward(batch):
    reward = ImageReward(**SHAPEWORLD)
    cols = {"metadata": batch["metadata"]}
    for with_seed in (False, True):
        if with_seed:
            cols["seed"] = batch["seed"]
        got = reward(batch["prompts"], batch["completions"], **cols)
        assert got == geneval_reward(batch["prompts"], batch["completions"], **cols)
    values = reward(batch["prompts"], batch["completions"], metadata=batch["metadata"])
    assert values[0::3] == [1.0] * 8  # the ideal rewrite passes GenEval's rules on shapeworld
    assert values[2::3] == [0.0] * 8  # no answer -> 0.0, as geneval_reward documents
    assert sum(values[1::3]) < 8  # the raw prompt loses to the rewrite on some
    assert reward.last_components["composition"][2] is None  # no image was made for it


def test_generates_from_answer_and_judges_against_original_prompt():
    """The image comes from the enhanced prompt; the metadata (and seed) belong to the original."""
    meta = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a dog"}
    prompt = build_messages("a photo of a dog")
    reward = ImageReward(generator="shapeworld", scorer="composition")
    rewritten = _completion("one dog on the left side, drawn clearly on a plain light background, nothing else at all")
    assert reward([prompt], [rewritten], metadata=[json.dumps(meta)]) == [1.0]
    assert reward([prompt], [_completion("one cat on the left side")], metadata=[meta]) == [0.0]


def test_registry_loads_the_class_with_kwargs(batch):
    check_reward("t2i_image_reward", SHAPEWORLD)  # validates without building anything
    reward = load_reward("t2i_image_reward", SHAPEWORLD)
    assert isinstance(reward, ImageReward) and reward.__name__ == "t2i_image_reward"
    with pytest.raises(ValueError, match="does not accept keyword argument"):
        load_reward("t2i_image_reward", {"scorers": "clip"})
    with pytest.raises(ValueError, match="needs a 'metadata' column"):
        reward(batch["prompts"][:1], batch["completions"][:1])
    with pytest.raises(ValueError, match="two scorers are named 'composition'"):
        ImageReward(scorer=["composition", {"name": "composition", "partial": True}])
    with pytest.raises(ValueError, match=r"scorer\[1\].*'name' key"):
        ImageReward(scorer=["composition", {"detector": "pixel"}])


def test_reward_pool_with_two_actors(ray_cluster, batch):
    spec = RewardSpec(name="image", source="t2i_image_reward", kwargs=SHAPEWORLD, num_workers=2, num_cpus=0.5)
    with RewardPool(spec, on_failure="fail_fast") as pool:
        result = pool.score(batch["prompts"], batch["completions"], metadata=batch["metadata"], seed=batch["seed"])
    expected = geneval_reward(batch["prompts"], batch["completions"], metadata=batch["metadata"], seed=batch["seed"])
    assert result.values == expected and result.n_failed == result.n_invalid == 0


def test_tiny_stable_diffusion_with_weighted_clip_and_composition(tmp_path, batch):
    sd = build_tiny_sd_pipeline(tmp_path / "sd")
    clip = build_tiny_clip(tmp_path / "clip")
    reward = ImageReward(
        generator={"kind": "diffusers", "model": str(sd), "steps": 2, "guidance_scale": 1.0, "batch_size": 4},
        scorer=[
            {"name": "clip", "model_path": str(clip), "weight": 2.0},
            {"name": "composition", "detector": "pixel", "weight": 0.5, "label": "geneval"},
        ],
    )
    prompts, completions, metadata = batch["prompts"][:6], batch["completions"][:6], batch["metadata"][:6]
    values = reward(prompts, completions, metadata=metadata)
    assert values[2] == 0.0 and values[5] == 0.0  # no answer
    answered = [0, 1, 3, 4]
    assert [im.size for im in reward.last_images] == [(32, 32)] * 4
    originals = [prompts[k][-1]["content"] for k in answered]
    cos = ClipScorer(str(clip)).score(reward.last_images, originals)
    geneval = [reward.last_components["geneval"][k] for k in answered]
    assert [values[k] for k in answered] == pytest.approx(
        [2 * c + 0.5 * g for c, g in zip(cos, geneval, strict=True)], abs=1e-5
    )
    # G completions of one prompt share the seed (prompt_seed of the original): same text, same image
    again = reward([prompts[0]], [completions[0]], metadata=[metadata[0]])
    assert again == pytest.approx([values[0]], abs=1e-5)
    assert prompt_seed(originals[0]) == prompt_seed(prompts[0][-1]["content"])
