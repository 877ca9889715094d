"""The built-in env: write text rich in a target letter.

A dense reward (the fraction of the completion's characters that are the target letter, in
[0, 1]) that a tiny randomly initialised policy can visibly improve on CPU within ~60 GRPO steps;
the embedded default config trains on it.
"""

from __future__ import annotations

import random

from pydantic import Field

from rewards.spec import RewardSpec
from rl.env_api import Env, EnvArgs

SYSTEM = "You write short lines of text."


class LettersArgs(EnvArgs):
    letters: str = Field("a", min_length=1, description="Target letters; each prompt asks for one of them.")
    num_prompts: int = Field(64, ge=1, description="Training prompts.")
    num_eval_prompts: int = Field(16, ge=0, description="Held-out prompts.")


class LettersEnv(Env):
    Args = LettersArgs

    def _rows(self, n: int, offset: int) -> dict[str, list]:
        rng = random.Random(self.seed * 1_000_003 + offset)
        subjects = ["a cat", "the sea", "a garden", "a red car", "the moon", "bananas", "a map", "the lab"]
        prompts, letters = [], []
        for _ in range(n):
            letter = rng.choice(self.args.letters)
            topic = rng.choice(subjects)
            prompts.append(
                [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Write a line about {topic} using the letter '{letter}' a lot."},
                ]
            )
            letters.append(letter)
        return {"prompt": prompts, "letter": letters}

    def train_dataset(self):
        from datasets import Dataset

        return Dataset.from_dict(self._rows(self.args.num_prompts, offset=0))

    def eval_dataset(self):
        from datasets import Dataset

        if not self.args.num_eval_prompts:
            return None
        return Dataset.from_dict(self._rows(self.args.num_eval_prompts, offset=1))

    def rewards(self) -> list[RewardSpec]:
        return [RewardSpec(name="letter_fraction", source="letter_fraction", weight=1.0)]
