"""The TRL seam in one place: every GRPOTrainer method RelayGRPOTrainer overrides still exists in the
installed TRL with the parameters the override relies on (rl.learner.grpo.TRL_OVERRIDES)."""

from __future__ import annotations

import inspect

import pytest
from trl import GRPOTrainer

from rl.learner.grpo import TRL_OVERRIDES, RelayGRPOTrainer


@pytest.mark.parametrize("name", sorted(TRL_OVERRIDES))
def test_trl_still_has_each_overridden_method_with_the_expected_parameters(name):
    assert hasattr(GRPOTrainer, name), f"TRL's GRPOTrainer no longer has {name}; RelayGRPOTrainer overrides it"
    params = tuple(inspect.signature(getattr(GRPOTrainer, name)).parameters)
    expected = TRL_OVERRIDES[name]
    assert params[: len(expected)] == expected, f"GRPOTrainer.{name}{params} no longer starts with {expected}"


def test_the_table_lists_every_override():
    overridden = {n for n, v in vars(RelayGRPOTrainer).items() if callable(v) and hasattr(GRPOTrainer, n)}
    assert overridden == set(TRL_OVERRIDES)  # a new override must be listed (and so checked) too
