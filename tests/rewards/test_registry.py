"""Reward loading by name, import string and file; kwargs binding; the built-in rewards."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from rewards.builtin import completion_length, exact_match, length_penalty, letter_fraction
from rewards.pool import RewardSpec, RewardWorker
from rewards.registry import REWARDS, check_reward, is_async_reward, load_reward, reward_name
from rl.registry import RegistryError

FIXTURES = Path(__file__).parent / "fixtures" / "sample_rewards.py"


def test_builtins_are_registered_lazily_and_load_by_name():
    assert {"letter_fraction", "exact_match", "completion_length", "length_penalty"} <= set(REWARDS.names())
    assert load_reward("exact_match") is exact_match
    assert load_reward("rewards.builtin:letter_fraction") is letter_fraction


def test_load_from_file(tmp_path):
    path = tmp_path / "my_reward.py"
    path.write_text("def shouty(prompts, completions, **kw):\n    return [float(c.isupper()) for c in completions]\n")
    fn = load_reward(f"{path}:shouty")
    assert fn(prompts=["p", "p"], completions=["HI", "hi"]) == [1.0, 0.0]


def test_unknown_name_lists_known_ones():
    with pytest.raises(RegistryError) as info:
        load_reward("exact_matc")
    message = str(info.value)
    assert "unknown reward function 'exact_matc'" in message
    assert "did you mean 'exact_match'" in message
    assert "letter_fraction" in message


def test_missing_file_and_attribute_are_named(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        load_reward(f"{tmp_path / 'nope.py'}:fn")
    with pytest.raises(RegistryError, match="has no attribute 'nope'"):
        load_reward(f"{FIXTURES}:nope")


def test_non_callable_is_refused_with_the_fix():
    spec = f"{FIXTURES}:NOT_CALLABLE"
    with pytest.raises(RegistryError) as info:
        load_reward(spec)
    assert str(info.value) == f"reward {spec!r} resolves to a int, not a callable; point it at a function"


CLASS_REWARDS = """
INSTANCES = []

class Scaled:
    def __init__(self, scale=1.0):
        self.scale = scale
        INSTANCES.append(self)

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        return [self.scale * len(c) for c in completions]

class NotAReward:
    def __init__(self):
        pass
"""


def test_class_is_instantiated_with_kwargs(tmp_path):
    path = tmp_path / "class_rewards.py"
    path.write_text(CLASS_REWARDS)
    fn = load_reward(f"{path}:Scaled", {"scale": 2.0})
    assert type(fn).__name__ == "Scaled" and fn.scale == 2.0
    assert reward_name(fn) == "Scaled"
    assert fn(prompts=["p"], completions=["abc"]) == [6.0]
    assert load_reward(f"{path}:Scaled").scale == 1.0  # no kwargs: still an instance, not the class
    worker = RewardWorker(RewardSpec(name="s", source=f"{path}:Scaled", kwargs={"scale": 3.0}))
    assert worker.score(["p"], ["ab"], None, {}) == [6.0]


def test_class_checks_happen_before_instantiation(tmp_path):
    path = tmp_path / "class_rewards2.py"
    path.write_text(CLASS_REWARDS)
    with pytest.raises(RegistryError, match=r"does not accept keyword argument\(s\) scal;.*scale"):
        load_reward(f"{path}:Scaled", {"scal": 2.0})
    with pytest.raises(RegistryError, match="class NotAReward, whose instances are not callable"):
        load_reward(f"{path}:NotAReward")
    check_reward(f"{path}:Scaled", {"scale": 5.0})  # validates without building an instance
    with pytest.raises(RegistryError, match="scal"):
        check_reward(f"{path}:Scaled", {"scal": 5.0})
    module = __import__("sys").modules[type(load_reward(f"{path}:Scaled")).__module__]
    assert len(module.INSTANCES) == 1  # only the load_reward call above built one


def test_duplicate_registration_is_refused():
    with pytest.raises(RegistryError, match="already registered"):
        REWARDS.register("exact_match", lambda *a, **k: [])


def test_kwargs_are_bound_and_keep_the_name():
    fn = load_reward(f"{FIXTURES}:scaled", {"scale": 2.0})
    assert isinstance(fn, functools.partial)
    assert fn.__name__ == "scaled" and reward_name(fn) == "scaled"
    assert fn(prompts=["p"], completions=["abc"]) == [6.0]


def test_unknown_kwargs_fail_at_load_time():
    with pytest.raises(RegistryError, match=r"does not accept keyword argument\(s\) scal;.*scale"):
        load_reward(f"{FIXTURES}:strict", {"scal": 2.0})
    # functions with **kwargs (the TRL contract's columns) take any name
    assert load_reward("length_penalty", {"max_length": 3}).__name__ == "length_penalty"


def test_async_reward_runs_in_worker():
    spec = RewardSpec(name="a", source=f"{FIXTURES}:async_len")
    worker = RewardWorker(spec)
    assert is_async_reward(worker.fn)
    assert is_async_reward(load_reward(f"{FIXTURES}:async_len", {"unused": 1}))
    assert worker.score(["p", "p"], ["ab", "abcd"], None, {}) == [2.0, 4.0]


def test_worker_calls_by_keyword_like_trl():
    worker = RewardWorker(RewardSpec(name="c", source=f"{FIXTURES}:only_completions"))
    assert worker.score(["p"], ["x"], None, {"extra": [1]}) == [1.0]


def test_letter_fraction_plain_and_chat():
    completions = ["a a b", [{"role": "assistant", "content": "zzzz"}], "   "]
    assert letter_fraction(["p"] * 3, completions, letter=["a", "z", "a"]) == [2 / 3, 1.0, 0.0]
    with pytest.raises(KeyError, match="needs a dataset column 'letter'"):
        letter_fraction(["p"], ["a"])


def test_exact_match_and_lengths():
    assert exact_match(["p"] * 3, [" Paris ", "Lyon", "x"], answer=["paris", "paris", None]) == [1.0, 0.0, None]
    assert exact_match(["p"], ["Paris"], answer=["paris"], case_sensitive=True) == [0.0]
    assert completion_length(["p"] * 2, ["ab", "a b c"], unit="words") == [1.0, 3.0]
    assert completion_length(["p"], ["ab"], completion_ids=[[1, 2, 3]], unit="tokens") == [3.0]
    assert length_penalty(["p"] * 2, ["abc", "abcdef"], max_length=3) == [0.0, -1.0]
