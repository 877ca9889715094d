"""`relay config [SECTION]`: every field with its type, default and description, through rl.cli.main."""

from __future__ import annotations

from pydantic import BaseModel

from rl.cli import main
from rl.config import RelayConfig


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """dotted name -> description of every non-section field (list-of-section items as NAME.<i>.FIELD)."""
    out = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaf_fields(ann, f"{prefix}{name}."))
            continue
        out[f"{prefix}{name}"] = field.description
        item = getattr(ann, "__args__", (None,))[0]
        if isinstance(item, type) and issubclass(item, BaseModel):
            out.update(_leaf_fields(item, f"{prefix}{name}.<i>."))
    return out


def _entries(text: str) -> dict[str, tuple[str, str]]:
    """dotted name -> (the 'name: type = default' line, the description joined from its indented lines)."""
    out: dict[str, tuple[str, str]] = {}
    head = None
    for line in text.splitlines():
        if line.startswith("    "):
            name, desc = out[head]
            out[head] = (name, f"{desc} {line.strip()}".strip())
        else:
            head = line.split(":", 1)[0]
            out[head] = (line, "")
    return out


def test_config_lists_every_field_with_type_default_and_description(capsys):
    assert main(["config"]) == 0
    entries = _entries(capsys.readouterr().out)
    fields = _leaf_fields(RelayConfig)
    assert set(entries) == set(fields)
    for name, description in fields.items():
        assert description, f"{name} has no description in rl/config.py"
        assert entries[name][1] == " ".join(description.split()), name
    assert entries["rollout.num_workers"][0] == "rollout.num_workers: int = 1 (>= 1)"
    assert entries["rollout.engine"][0] == "rollout.engine: 'hf' | 'vllm' = 'hf'"
    assert entries["cluster.address"][0] == "cluster.address: str | None = None"
    assert entries["rewards.functions.<i>.name"][0] == "rewards.functions.<i>.name: str = required"
    assert entries["algorithm.ppo.kl_coef"][0] == "algorithm.ppo.kl_coef: float = 0.001 (>= 0)"


def test_config_section_lists_only_that_section(capsys):
    assert main(["config", "rollout"]) == 0
    rollout = _entries(capsys.readouterr().out)
    assert set(rollout) == {n for n in _leaf_fields(RelayConfig) if n.startswith("rollout.")}
    assert main(["config", "algorithm.ppo"]) == 0
    assert set(_entries(capsys.readouterr().out)) == {
        n for n in _leaf_fields(RelayConfig) if n.startswith("algorithm.ppo.")
    }


def test_config_unknown_section_exits_2_naming_the_known_ones(capsys):
    assert main(["config", "rollot"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "relay config 'rollot': no such section; did you mean 'rollout'?" in captured.err
    assert (
        "known sections: model, model.tiny, lora, algorithm, algorithm.ppo, learner, rollout, rewards" in captured.err
    )
    assert "Traceback" not in captured.err
