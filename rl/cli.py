"""``relay`` command line. Imports stay inside the subcommands so ``relay --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_FAILURES = 1  # relay score: scored, but more samples failed than --max-failures allows
EXIT_CONFIG = 2
EXIT_STOPPED = 3  # stopped mid-run at a checkpoint (lost capacity, a dead learner worker); resumable

_DESCRIPTION = """\
Relay: RL fine-tuning of LLM policies rewarded by the outcome of another model.
Rollout and reward workers run as Ray actors; a TRL GRPO learner trains a LoRA adapter.
"""

_TRAIN_EPILOG = """\
examples:
  relay train                                   # the embedded default, configs/quickstart.yaml
  relay train configs/quickstart.yaml learner.max_steps=10 rollout.num_workers=2
  relay train my.yaml model.name=Qwen/Qwen2.5-0.5B-Instruct cluster.address=auto --run-dir runs/exp1
"""


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that accepts positionals (dotted overrides) before, between and after options:
    ``relay train CONFIG --run-dir DIR learner.max_steps=3``. The subparsers action calls
    ``parse_known_args``; it is routed through argparse's ``parse_known_intermixed_args``, which calls
    ``parse_known_args`` again itself (hence the re-entry guard)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a policy (starts or joins a Ray cluster)",
        description="Train a policy with RL. Overrides are dotted keys: section.field=value.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (default: configs/quickstart.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. learner.max_steps=10")
    p.add_argument(
        "--run-dir", default=None, help="run directory (default: the config's run_dir, else runs/<name>-<timestamp>)"
    )
    p.add_argument("--check", action="store_true", help="validate the config and env, print it, start nothing")
    p.add_argument(
        "--resume",
        choices=["never", "auto"],
        default="never",
        help="auto: if --run-dir already holds this run, continue it from its latest valid checkpoint",
    )
    p.add_argument("--force", action="store_true", help="with --resume auto: resume even if the config changed")
    p.set_defaults(func=_cmd_train)


def _split_config_and_overrides(args) -> tuple[str | None, list[str]]:
    # `relay train learner.max_steps=3` has no config file: the first positional is an override.
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def _cmd_train(args) -> int:
    from rl.config import load_config

    config, overrides = _split_config_and_overrides(args)
    cfg = load_config(config, overrides)
    if args.check:
        import yaml

        from rl.preflight import preflight

        preflight(cfg)
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from pathlib import Path

    from rl.driver import resume, train
    from rl.run_dir import default_run_dir

    target = args.run_dir or default_run_dir(cfg)  # --run-dir wins over the config's run_dir
    if args.resume == "auto" and (Path(target) / "config.yaml").exists():
        run_dir = resume(target, new_cfg=cfg, force=args.force)
    else:
        run_dir = train(cfg, target)
    print(f"run directory: {run_dir}")
    return 0


def _add_tiny_model(sub) -> None:
    p = sub.add_parser(
        "tiny-model",
        help="build the tiny local Qwen2 model + tokenizer",
        description="Build a tiny Qwen2-architecture causal LM and BPE tokenizer with a chat template "
        "(Hugging Face layout), deterministically from a seed.",
    )
    p.add_argument("out_dir", help="directory to write (created)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and tokenizer (default 0)")
    p.set_defaults(func=_cmd_tiny_model)


def _cmd_tiny_model(args) -> int:
    from rl.tiny_model import TinyModelSpec, build_tiny_model

    out = build_tiny_model(args.out_dir, TinyModelSpec(seed=args.seed))
    print(f"tiny model written to {out}")
    return 0


def _add_resume(sub) -> None:
    p = sub.add_parser(
        "resume",
        help="continue a run from its latest valid checkpoint",
        description="Continue RUN_DIR from its latest valid checkpoint; corrupt or unfinished checkpoints are "
        "reported and skipped. Overrides may change only fields that do not alter what the run computes "
        "(learner.max_steps, logging.*, checkpoint.*, eval.*, cluster.*) unless --force is given.",
    )
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. learner.max_steps=200")
    p.add_argument("--force", action="store_true", help="resume even if other fields changed")
    p.set_defaults(func=_cmd_resume)


def _cmd_resume(args) -> int:
    from rl.driver import resume

    print(f"run directory: {resume(args.run_dir, args.overrides, force=args.force)}")
    return 0


def _add_config(sub) -> None:
    p = sub.add_parser(
        "config",
        help="list every config field with its type, default and description",
        description="Print every config field (dotted name, type, default, bounds, description), or only "
        "those of SECTION (e.g. rollout, algorithm.ppo). Override any of them as section.field=value.",
    )
    p.add_argument("section", nargs="?", default=None, help="one section, e.g. rollout (default: all)")
    p.set_defaults(func=_cmd_config)


def _cmd_config(args) -> int:
    from rl.config import describe_config

    print(describe_config(args.section), end="")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint as a PEFT adapter (or a merged model)",
        description="Write a run's adapter (latest valid checkpoint, or --checkpoint N) as a plain PEFT adapter "
        "directory loadable with PeftModel.from_pretrained; --merge writes the base model with it merged in.",
    )
    p.add_argument("run_dir", help="the run directory")
    p.add_argument("out_dir", help="directory to write")
    p.add_argument("--checkpoint", type=int, default=None, help="step of the checkpoint (default: latest valid)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base model and save that")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from rl.export import export

    out = export(args.run_dir, args.out_dir, step=args.checkpoint, merge=args.merge)
    print(f"exported to {out}")
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate the start and trained policies of a run (or a config's policy)",
        description="Score the policy RL started from and the trained policy on the env's evaluation set "
        "(e.g. GenEval-style tags for RePrompt); prints a table and writes eval.json.",
    )
    p.add_argument("target", help="a run directory, or a YAML config (evaluates its starting policy)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--max-prompts", type=int, default=None, help="evaluate on at most N prompts")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for eval.json and the env's eval files (default: the run directory; with overrides or "
        "--max-prompts, RUN_DIR/eval-<hash>/ so the run's own eval.json is kept)",
    )
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args) -> int:
    from rl.evaluate import run_eval

    run_eval(args.target, args.overrides, max_prompts=args.max_prompts, out=args.out)
    return 0


def _add_hooked(sub, name: str, module: str, help: str, description: str) -> None:
    """A subcommand whose arguments and body live in ``module`` (``add_<name>_arguments``, ``run_<name>``);
    those modules import only argparse at the top, so this stays fast."""
    import importlib

    p = sub.add_parser(name, help=help, description=description)
    mod = importlib.import_module(module)
    getattr(mod, f"add_{name}_arguments")(p)
    p.set_defaults(func=getattr(mod, f"run_{name}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Every subcommand takes its options and positionals (config, overrides) in any order.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_IntermixedParser)
    _add_train(sub)
    _add_resume(sub)
    _add_eval(sub)
    _add_hooked(
        sub,
        "score",
        "rewards.score",
        help="score a JSONL of samples with a reward function",
        description="Score {prompt, completion, ...columns} JSONL lines with any reward function through "
        "Relay's reward pool; prints a summary and writes per-sample scores.",
    )
    _add_hooked(
        sub,
        "submit",
        "rl.submit",
        help="submit `relay train` to a running Ray cluster (Ray Jobs API)",
        description="Submit a training job to a running Ray cluster (--address, else RAY_ADDRESS); streams its "
        "logs and returns the job's exit status.",
    )
    _add_hooked(
        sub, "doctor", "rl.doctor", help="versions, GPUs, optional engines, cluster resources and what a config needs",
        description="Report package versions, GPUs, whether vLLM/diffusers import, the cluster's resources, "
        "and whether the given config's actors fit.",
    )  # fmt: skip
    _add_export(sub)
    _add_config(sub)
    _add_tiny_model(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    from rl.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        from rewards.pool import RewardLoadError
        from rl.cluster import CapacityError, RunStopped

        if isinstance(exc, (CapacityError, RewardLoadError)):  # found at startup; nothing ran
            print(f"relay: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if isinstance(exc, RunStopped):
            print(f"relay: {exc}", file=sys.stderr)
            return EXIT_STOPPED
        raise
    except KeyboardInterrupt:
        print("relay: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
