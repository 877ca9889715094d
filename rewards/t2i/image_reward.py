"""RePrompt's image reward as one stateful callable: generate from the policy's ``<answer>``, judge
the image against the ORIGINAL prompt.

``ImageReward(generator=..., scorer=...)`` loads its generator and scorers once (in
``__init__``; ``rewards.registry.load_reward`` instantiates it inside each Ray reward actor) and is
then called with TRL's reward signature::

    reward(prompts, completions, completion_ids=None, *, metadata=None, seed=None, **columns)

Per sample: the answer is ``geneval.parse_completion(completion).answer``; no answer -> 0.0 (no
image is made; the format reward carries the penalty, as ``geneval_reward`` documents). The seed is
the ``seed`` column, else ``geneval.prompt_seed(original prompt)``, so the G completions of one
prompt share their initial noise and differ only through their text. The original prompt is
``rewards.contract.user_text(prompt)`` (nothing else is stripped); ``CompositionChecker`` also gets
the ``metadata`` column. All answered samples of a call are generated and scored as one batch.

Config (YAML-friendly)::

    generator: {kind: diffusers, model: black-forest-labs/FLUX.1-schnell, dtype: bfloat16, device: cuda}
    scorer: [{name: clip, model_path: openai/clip-vit-large-patch14, weight: 0.5},
             {name: composition, detector: owlv2, model_path: google/owlv2-base-patch16-ensemble, weight: 1.0}]

With several scorers the reward is ``sum(weight * score)``; a sample any scorer left unscored
(None: e.g. a failed judge request) is None overall, so no half-judged sample enters the loss.
Per-scorer values of the latest call stay in ``last_components`` for metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.contract import message_text, user_text
from rewards.t2i.generators import build_generator
from rewards.t2i.geneval import parse_completion, prompt_seed
from rewards.t2i.scorers import build_scorer


def _scorer_entries(scorer: Any) -> list[dict[str, Any]]:
    """Normalise ``"name"`` | ``{"name": ..., "weight": ..., **kwargs}`` | a list of those."""
    items = scorer if isinstance(scorer, (list, tuple)) else [scorer]
    if not items:
        raise ValueError("ImageReward: scorer is empty; give a scorer name, a {name: ...} mapping or a list of them")
    entries = []
    for k, item in enumerate(items):
        where = f"scorer[{k}]" if isinstance(scorer, (list, tuple)) else "scorer"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"ImageReward: {where} ({item!r}) must be a scorer name or a mapping with a 'name' key")
        entry = dict(item)
        entries.append(
            {
                "name": entry.pop("name"),
                "weight": float(entry.pop("weight", 1.0)),
                "label": entry.pop("label", None),
                "kwargs": entry,
            }
        )
    return entries


class ImageReward:
    """Generator + weighted image scorers behind TRL's reward signature (see the module docstring)."""

    def __init__(
        self,
        generator: dict[str, Any] | str = "shapeworld",
        scorer: Any = "composition",
        no_answer_value: float = 0.0,
    ):
        gen_cfg = {"kind": generator} if isinstance(generator, str) else dict(generator)
        if "kind" not in gen_cfg:
            raise ValueError(f"ImageReward: generator ({generator!r}) needs a 'kind' (shapeworld or diffusers)")
        kind = gen_cfg.pop("kind")
        self.generator = build_generator(kind, **gen_cfg)
        self.no_answer_value = no_answer_value
        self.scorers: list[tuple[str, float, Any]] = []
        labels: set[str] = set()
        for entry in _scorer_entries(scorer):
            label = entry["label"] or entry["name"]
            if label in labels:
                raise ValueError(f"ImageReward: two scorers are named {label!r}; give one a distinct 'label'")
            labels.add(label)
            self.scorers.append((label, entry["weight"], build_scorer(entry["name"], **entry["kwargs"])))
        self.__name__ = "t2i_image_reward"
        self.last_components: dict[str, list[float | None]] = {}
        self.last_images: list[Any] = []

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        *,
        metadata: Sequence[Any] | None = None,
        seed: Sequence[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"ImageReward: {len(prompts)} prompts for {n} completions")
        for name, column in (("metadata", metadata), ("seed", seed)):
            if column is not None and len(column) != n:
                raise ValueError(f"ImageReward: column {name!r} has {len(column)} values for {n} completions")
        answered: list[int] = []
        answers: list[str] = []
        for k, completion in enumerate(completions):
            answer = parse_completion(message_text(completion)).answer
            if answer is not None:
                answered.append(k)
                answers.append(answer)
        originals = [user_text(prompts[k]) for k in answered]
        seeds = [int(seed[k]) if seed is not None else prompt_seed(originals[i]) for i, k in enumerate(answered)]
        images = self.generator.generate(answers, seeds) if answered else []
        self.last_images = images
        metas = [metadata[k] for k in answered] if metadata is not None else None

        rewards: list[float | None] = [self.no_answer_value] * n
        totals: list[float | None] = [0.0] * len(answered)
        self.last_components = {}
        for label, weight, scorer in self.scorers:
            if not answered:
                values: list[float | None] = []
            elif getattr(scorer, "needs_metadata", False):
                values = scorer.score(images, originals, metadata=metas)
            else:
                values = scorer.score(images, originals)
            component: list[float | None] = [None] * n
            for i, (k, v) in enumerate(zip(answered, values, strict=True)):
                component[k] = v
                totals[i] = None if v is None or totals[i] is None else totals[i] + weight * float(v)
            self.last_components[label] = component
        for i, k in enumerate(answered):
            rewards[k] = totals[i]
        return rewards
