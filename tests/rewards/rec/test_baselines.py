"""Popularity and SASRec baselines, and the full-catalogue scorer they share."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rewards.rec.baselines import (
    PopularityBaseline,
    SASRec,
    SASRecBaseline,
    SASRecConfig,
    ScoreEnsemble,
    evaluate_scores,
    format_table,
    load_teacher,
    main,
    pad_right,
    prefix_pairs,
    sample_negatives,
    sasrec_loss,
)
from rewards.rec.data import Example, Interaction, RecData, leave_one_out


def _ex(user, hist, target):
    return Example(tuple(Interaction(user, i) for i in hist), Interaction(user, target))


def test_evaluate_scores_hand_computed():
    catalog = ["a", "b", "c", "d"]
    scores = np.array([[0.9, 0.5, 0.1, 0.0], [0.9, 0.5, 0.1, 0.0], [0.2, 0.2, 0.2, 0.2]])
    exs = [_ex("u1", ["c"], "a"), _ex("u2", ["a"], "c"), _ex("u3", ["a"], "b")]
    m = evaluate_scores(lambda h: scores[: len(h)], exs, catalog, ks=(1, 3))
    # ranks: 1, 3, 4 (all tied: pessimistic)
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@3"] == pytest.approx(2 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 3)
    # excluding history: u2's "a" is removed, so "c" ranks 2
    m2 = evaluate_scores(lambda h: scores[: len(h)], exs, catalog, ks=(2,), exclude_history=True)
    assert m2["recall@2"] == pytest.approx(2 / 3)


def test_popularity_baseline():
    train = {"u1": [Interaction("u1", "b"), Interaction("u1", "c")], "u2": [Interaction("u2", "b")]}
    pop = PopularityBaseline(["a", "b", "c"]).fit(train)
    assert pop.scores([[], []]).tolist() == [[0, 2, 1], [0, 2, 1]]
    m = evaluate_scores(pop.scores, [_ex("u1", ["b"], "b"), _ex("u2", ["b"], "c")], pop.catalog, ks=(1, 2))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0


@pytest.mark.parametrize("loss_type", ["CE", "BPR", "BCE"])
def test_sasrec_learns_a_sequential_pattern(loss_type):
    """Users walk a cycle of 20 items from random starts; SASRec must learn 'next = current + 1'
    (popularity cannot: every item is equally popular), with each training loss."""
    rng = np.random.default_rng(0)
    n = 20
    inter = {}
    for u in range(150):
        start, length = int(rng.integers(n)), int(rng.integers(5, 10))
        inter[f"u{u}"] = [Interaction(f"u{u}", f"i{(start + t) % n}") for t in range(length)]
    data = RecData(inter)
    split = leave_one_out(data)
    catalog = data.item_ids
    cfg = SASRecConfig(
        hidden_size=32, n_layers=1, inner_size=64, max_epochs=12, lr=1e-2, batch_size=64, hidden_dropout=0.1,
        attn_dropout=0.1, loss_type=loss_type,
    )  # fmt: skip
    model = SASRecBaseline(catalog, cfg).fit(split.train, split.valid)
    m = evaluate_scores(model.scores, split.test, catalog, ks=(1, 10))
    pop = evaluate_scores(PopularityBaseline(catalog).fit(split.train).scores, split.test, catalog, ks=(1, 10))
    assert m["recall@1"] > 0.8, (m, model.log[-3:])
    assert pop["recall@10"] < 0.6
    assert model.log[-1]["loss"] < model.log[0]["loss"]


def test_config_defaults_follow_recbole():
    c = SASRecConfig()
    assert (c.hidden_size, c.n_layers, c.n_heads, c.inner_size) == (64, 2, 2, 256)
    assert (c.hidden_dropout, c.attn_dropout, c.hidden_act, c.layer_norm_eps) == (0.5, 0.5, "gelu", 1e-12)
    assert (c.initializer_range, c.max_len, c.lr, c.batch_size) == (0.02, 50, 1e-3, 2048)
    assert (c.max_epochs, c.patience) == (300, 10)
    with pytest.raises(ValueError, match=r"hidden_size \(64\) must be a multiple of n_heads \(3\).*hidden_dropout"):
        SASRecBaseline(["a"], SASRecConfig(n_heads=3, hidden_dropout=1.0))


def test_prefix_pairs_are_every_prefix_capped_at_max_len():
    x, y = prefix_pairs([[1, 2, 3, 4], [5], [6, 7]], max_len=2)
    assert x == [[1], [1, 2], [2, 3], [6]] and y == [2, 3, 4, 7]
    seq, lengths = pad_right([[1], [2, 3], []], 3)
    assert seq.tolist() == [[1, 0, 0], [2, 3, 0], [0, 0, 0]] and lengths.tolist() == [1, 2, 1]


def test_bucketed_encode_equals_full_padding_and_ignores_padding():
    torch.manual_seed(0)
    model = SASRec(30, SASRecConfig(max_len=8)).eval()
    rows = [[1], [2, 3], [4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16], [3, 3, 3]]
    seq, lengths = pad_right(rows, 8)
    full = model(seq, lengths)  # [5, 64]: every row padded to 8
    assert torch.allclose(model.encode(seq, lengths), full, atol=1e-5)
    # what follows the last item (padding or not) must not change a row: the mask is causal
    seq2 = seq.clone()
    seq2[0, 1:] = 7
    assert torch.allclose(model(seq2, lengths)[0], full[0], atol=1e-5)


def test_sasrec_scores_use_its_own_cap_and_are_deterministic_in_eval():
    catalog = [f"i{k}" for k in range(10)]
    model = SASRecBaseline(catalog, SASRecConfig(max_len=3, hidden_size=16, inner_size=32))
    long = ["i1", "i2", "i3", "i4", "i5"]
    a = model.scores([long, long[-3:], ["unknown", "i1"], []])
    assert a.shape == (4, 10)
    np.testing.assert_allclose(a[0], a[1], atol=1e-6)  # only the last max_len items count
    np.testing.assert_allclose(a[0], model.scores([long])[0], atol=1e-6)  # dropout off when scoring
    assert not np.allclose(a[2], a[3])  # an unknown item is skipped, "i1" remains


def test_save_and_load_give_the_same_scores(tmp_path):
    catalog = [f"i{k}" for k in range(10)]
    model = SASRecBaseline(catalog, SASRecConfig(max_len=4, hidden_size=16, inner_size=32, seed=3))
    model.best_epoch, model.log = 7, [{"epoch": 0, "loss": 2.0}]
    model.save(tmp_path / "sasrec.pt")
    back = SASRecBaseline.load(tmp_path / "sasrec.pt")
    hist = [["i1", "i2"], ["i9"], []]
    np.testing.assert_allclose(back.scores(hist), model.scores(hist), atol=1e-6)
    assert back.catalog == catalog and back.cfg.max_len == 4 and back.best_epoch == 7 and back.log == model.log


def test_score_ensemble_is_the_mean_member_log_probability(tmp_path):
    """Two SASRec seeds as one teacher: scores = mean of their log-softmax over the catalogue, so its softmax is
    their normalised geometric mean; load_teacher reads one path as the model, a list as the ensemble."""
    catalog = [f"i{k}" for k in range(10)]
    members = [SASRecBaseline(catalog, SASRecConfig(max_len=4, hidden_size=16, inner_size=32, seed=s)) for s in (1, 2)]
    hist = [["i1", "i2"], ["i9"], []]
    logp = [torch.log_softmax(torch.as_tensor(m.scores(hist)), -1).numpy() for m in members]  # [3, 10] each
    ens = ScoreEnsemble(members)
    np.testing.assert_allclose(ens.scores(hist), (logp[0] + logp[1]) / 2, atol=1e-6)
    p = torch.softmax(torch.as_tensor(ens.scores(hist)), -1).numpy()
    geo = np.sqrt(np.exp(logp[0]) * np.exp(logp[1]))
    np.testing.assert_allclose(p, geo / geo.sum(-1, keepdims=True), atol=1e-6)
    assert not np.allclose(ens.scores(hist), logp[0], atol=1e-3)  # both members count

    for k, m in enumerate(members):
        m.save(tmp_path / f"s{k}.pt")
    assert isinstance(load_teacher(tmp_path / "s0.pt"), SASRecBaseline)
    assert isinstance(load_teacher([str(tmp_path / "s0.pt")]), SASRecBaseline)
    both = load_teacher([str(tmp_path / "s0.pt"), str(tmp_path / "s1.pt")])
    assert isinstance(both, ScoreEnsemble) and both.catalog == catalog
    np.testing.assert_allclose(both.scores(hist), ens.scores(hist), atol=1e-6)

    other = SASRecBaseline(catalog[::-1], SASRecConfig(max_len=4, hidden_size=16, inner_size=32))
    with pytest.raises(ValueError, match="member 1 ranks another catalogue"):
        ScoreEnsemble([members[0], other])


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    """Validation NDCG is scripted: best at epoch 1, then patience 2 -> stop after 3 worse epochs, weights
    of epoch 1 restored."""
    catalog = ["a", "b", "c"]
    train = {"u": [Interaction("u", x) for x in "abcabc"]}
    model = SASRecBaseline(catalog, SASRecConfig(hidden_size=8, n_heads=1, inner_size=8, patience=2, lr=0.1))
    script = iter([0.1, 0.5, 0.2, 0.5, 0.3, 0.3, 0.3, 0.9])
    snapshots = []
    import rewards.rec.baselines as b

    def fake_eval(*args, **kwargs):
        snapshots.append(model.model.item.weight.detach().clone())
        return {"ndcg@10": next(script)}

    monkeypatch.setattr(b, "evaluate_scores", fake_eval)
    model.fit(train, [_ex("u", ["a"], "b")])
    # 0.5 at epoch 1, tie 0.5 at epoch 3 counts as better (RecBole), then 3 epochs > patience 2 -> stop
    assert model.best_epoch == 3 and len(model.log) == 7
    assert torch.equal(model.model.item.weight, snapshots[3])
    assert [r["valid_ndcg@10"] for r in model.log] == [0.1, 0.5, 0.2, 0.5, 0.3, 0.3, 0.3]
    # min_delta 0.05: 0.12 is not enough over 0.1, 0.2 is; then 0.22, 0.24, 0.2 are not -> stop, best epoch 2
    script = iter([0.1, 0.12, 0.2, 0.22, 0.24, 0.2, 0.9])
    cfg = SASRecConfig(hidden_size=8, n_heads=1, inner_size=8, patience=2, min_delta=0.05)
    model = SASRecBaseline(catalog, cfg).fit(train, [_ex("u", ["a"], "b")])
    assert model.best_epoch == 2 and len(model.log) == 6


def test_cli_prints_protocol_and_table(tmp_path, capsys):
    import json

    rng = np.random.default_rng(1)
    inter = {str(u): [int(x) for x in rng.integers(0, 15, size=6)] for u in range(30)}
    path = tmp_path / "Toy.inter.json"
    path.write_text(json.dumps(inter))
    res = main([str(path), "--max-epochs", "2"])
    out = capsys.readouterr().out
    assert "protocol: leave-one-out" in out and "| popularity |" in out and "| sasrec |" in out
    assert res["sasrec"]["epochs"] == 2 and res["sasrec"]["n"] == 30
    assert format_table(res).count("\n") == 3


SCIENTIFIC = Path(__file__).resolve().parents[3] / "../shared/data/rec/amazon2018_scientific/Scientific.inter.json"


@pytest.mark.long
@pytest.mark.timeout(1800)  # 468-845 s measured on 2 shared cores
@pytest.mark.skipif(not SCIENTIFIC.is_file(), reason="needs ../shared/data (Amazon 2018 Scientific)")
def test_sasrec_beats_popularity_widely_on_full_scientific():
    """The measurement of docs/genrec.md (issue 17) as a check: 8,317 users, RecBole defaults, ~8-15 min
    on one CPU thread. Measured Recall@10 0.101-0.104 vs popularity 0.023."""
    from rewards.rec.baselines import run_baselines
    from rewards.rec.data import load_lcrec

    torch.set_num_threads(1)
    res = run_baselines(load_lcrec(SCIENTIFIC), SASRecConfig(seed=0))
    pop, sas = res["popularity"], res["sasrec"]
    assert sas["recall@10"] > 3 * pop["recall@10"] and sas["ndcg@10"] > 3 * pop["ndcg@10"], res
    assert sas["recall@10"] > 0.08, res


def test_bench_reward_signal_hand_computed():
    from bench.rec_baselines import reward_signal

    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # normalised rows
    out = reward_signal(np.array([[0, 0], [1, 2]]), np.array([0, 1]), emb, k=1)
    # rule [[1, 1], [1, 0]]: group 1 flat, group 2 not
    assert out["rule"] == pytest.approx({"mean": 0.75, "informative_groups": 0.5, "group_std": 0.25})
    # similarity [[1, 1], [1, 0.8]]
    assert out["similarity"] == pytest.approx({"mean": 0.95, "informative_groups": 0.5, "group_std": 0.05})
    # neighbour@1: item 2's nearest is itself, then 1 (0.8) -> the target 1 ranks 2 > k -> 0
    assert out["neighbour@1"] == pytest.approx({"mean": 0.75, "informative_groups": 0.5, "group_std": 0.25})


def test_sampled_negatives_are_uniform_over_the_other_items():
    targets = torch.tensor([1, 3, 5] * 4000)
    neg = sample_negatives(targets, 5, torch.Generator().manual_seed(0))
    assert neg.shape == targets.shape
    assert not (neg == targets).any() and int(neg.min()) >= 1 and int(neg.max()) <= 5
    for t in (1, 3, 5):  # each of the 4 other items about 1/4 of the time
        counts = torch.bincount(neg[targets == t], minlength=6)[1:].float() / 4000
        assert counts[t - 1] == 0
        assert torch.allclose(counts[torch.arange(5) != t - 1], torch.full((4,), 0.25), atol=0.03), (t, counts)


def test_sampled_losses_hand_computed():
    model = SASRec(3, SASRecConfig(hidden_size=2, n_heads=1))
    with torch.no_grad():  # item rows 1..3 (row 0 = padding)
        model.item.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    h, y = torch.tensor([[2.0, 1.0]]), torch.tensor([1])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    neg = int(sample_negatives(y, 3, torch.Generator().manual_seed(0)))
    neg_score = {2: 1.0, 3: -2.0}[neg]
    with torch.no_grad():  # plain numbers
        ce = float(sasrec_loss(model, h, y, "CE", torch.Generator()))
        bpr = float(sasrec_loss(model, h, y, "BPR", torch.Generator().manual_seed(0)))
        bce = float(sasrec_loss(model, h, y, "BCE", torch.Generator().manual_seed(0)))
    assert math.isclose(ce, -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + math.exp(-2))), rel_tol=1e-6)
    assert math.isclose(bpr, -math.log(sig(2.0 - neg_score)), rel_tol=1e-6)
    assert math.isclose(bce, -math.log(sig(2.0)) - math.log(sig(-neg_score)), rel_tol=1e-6)
    with pytest.raises(ValueError, match=r"loss_type \('MSE'\) must be 'CE', 'BPR' or 'BCE'"):
        SASRecBaseline(["a"], SASRecConfig(loss_type="MSE"))
