"""Semantic IDs: deterministic codes for a seed (real MiniLM embeddings of real items), collision
disambiguation, the index file, stats, and code tokens added to a tiny Qwen2."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.rec.semantic_ids import (
    RQVAEConfig,
    SemanticIndex,
    add_code_tokens,
    build_semantic_index,
    code_stats,
    code_string,
    disambiguate,
    embed_texts,
    format_stats,
    parse_code,
    rq_kmeans,
    rq_vae,
)

N_ITEMS = 120


@pytest.fixture(scope="module")
def items_and_emb(shared_data):
    from rewards.rec.data import load_lcrec

    data = load_lcrec(shared_data / "rec" / "amazon2018_scientific" / "Scientific.inter.json")
    items = data.item_ids[:N_ITEMS]
    texts = [data.item_text(i, max_description_chars=120) for i in items]
    return items, texts, embed_texts(texts)


def test_code_strings_round_trip():
    assert code_string((12, 7, 201)) == "<a_12><b_7><c_201>"
    assert parse_code("<a_12><b_7><c_201>") == (12, 7, 201)
    assert parse_code(" <a_12> <b_7>\n<c_201> ") == (12, 7, 201)
    for bad in ["", "<a_12>x<b_7>", "<b_1><a_2>", "<a_1><c_2>", "item 12", "<a_1><b_2>!"]:
        assert parse_code(bad) is None, bad


def test_disambiguate_hand_case():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [4, 4]])
    assert disambiguate(codes).tolist() == [[0, 1, 0], [0, 1, 1], [2, 3, 0], [0, 1, 2], [2, 3, 1], [4, 4, 0]]
    unique = np.array([[0, 1], [1, 1]])
    assert disambiguate(unique).tolist() == unique.tolist()  # auto: no collisions, no level
    assert disambiguate(unique, "always").tolist() == [[0, 1, 0], [1, 1, 0]]
    s = code_stats(codes, [5, 5])
    assert (
        s["collision_rate"] == pytest.approx(5 / 6) and s["max_group"] == 3 and s["unique_rate"] == pytest.approx(0.5)
    )
    assert s["usage"] == pytest.approx([3 / 5, 3 / 5])


def test_rq_kmeans_real_embeddings_deterministic_and_unique(items_and_emb):
    items, texts, emb = items_and_emb
    assert emb.shape == (N_ITEMS, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    a = build_semantic_index(items, embeddings=emb, levels=3, codebook_size=8, seed=3)
    b = build_semantic_index(items, embeddings=emb, levels=3, codebook_size=8, seed=3)
    c = build_semantic_index(items, embeddings=emb, levels=3, codebook_size=8, seed=4)
    assert np.array_equal(a.codes, b.codes)
    assert not np.array_equal(a.codes, c.codes)
    assert len({tuple(r) for r in a.codes.tolist()}) == N_ITEMS  # every item has its own ID
    st = a.stats()
    assert 0 <= st["collision_rate"] < 1 and len(st["usage"]) == 3 and "collision rate" in format_stats(st)
    # similar texts share a first-level code more often than random pairs
    sim = emb @ emb.T
    same = a.codes[:, 0][:, None] == a.codes[:, 0][None, :]
    off = ~np.eye(N_ITEMS, dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.05


def test_hkmeans_splits_within_each_parent_and_avoids_collisions(items_and_emb):
    items, _, emb = items_and_emb
    h = build_semantic_index(items, embeddings=emb, method="hkmeans", levels=3, codebook_size=8, seed=0)
    again = build_semantic_index(items, embeddings=emb, method="hkmeans", levels=3, codebook_size=8, seed=0)
    rq = rq_kmeans(emb, 3, 8, seed=0)
    base = h.codes[:, :3]
    assert np.array_equal(h.codes, again.codes) and h.meta["method"] == "hkmeans"
    assert np.array_equal(base[:, 0], rq[:, 0])  # level 1 is the same k-means on the whole catalogue
    # a parent with at most K distinct items gives each its own child code; only identical texts (the catalogue
    # lists one product twice among these 120) cannot be split
    for prefix in {tuple(r) for r in base[:, :2].tolist()}:
        members = (base[:, :2] == prefix).all(axis=1)
        distinct = len(np.unique(emb[members], axis=0))
        assert distinct > 8 or len(np.unique(base[members, 2])) == distinct
    _, inverse, counts = np.unique(emb, axis=0, return_inverse=True, return_counts=True)
    shares_its_text = int((counts[inverse.ravel()] > 1).sum())  # items whose embedding another item has too
    assert shares_its_text >= 2
    assert h.stats()["collision_rate"] == shares_its_text / N_ITEMS < code_stats(rq, [8, 8, 8])["collision_rate"]
    # level 2 clusters within a parent: items sharing two codes are closer than items sharing only the first
    sim = emb @ emb.T
    off = ~np.eye(N_ITEMS, dtype=bool)
    same1 = base[:, 0][:, None] == base[:, 0][None, :]
    same2 = same1 & (base[:, 1][:, None] == base[:, 1][None, :])
    assert sim[same2 & off].mean() > sim[same1 & ~same2].mean() + 0.05


def test_duplicate_items_get_an_extra_level(items_and_emb):
    items, texts, emb = items_and_emb
    dup_emb = np.concatenate([emb[:40], emb[:10]])  # 10 items duplicated exactly: must collide
    ids = items[:40] + [f"copy{i}" for i in range(10)]
    idx = build_semantic_index(ids, embeddings=dup_emb, levels=2, codebook_size=16, seed=0)
    hk = build_semantic_index(ids, embeddings=dup_emb, method="hkmeans", levels=2, codebook_size=16, seed=0)
    assert hk.stats()["collision_rate"] == 20 / 50  # identical embeddings cannot be split: only the copies collide
    assert idx.levels == 3 and idx.meta["extra_level"]
    assert idx.stats()["collision_rate"] >= 20 / 50
    assert len({tuple(r) for r in idx.codes.tolist()}) == 50
    for i in range(10):  # the copy differs from its original only in the extra level
        assert idx.code_of(ids[i])[:2] == idx.code_of(f"copy{i}")[:2]


def test_faiss_backend_and_rq_vae(items_and_emb):
    _, _, emb = items_and_emb
    f1, f2 = rq_kmeans(emb, 2, 8, seed=1, backend="faiss"), rq_kmeans(emb, 2, 8, seed=1, backend="faiss")
    assert np.array_equal(f1, f2) and f1.max() < 8
    cfg = RQVAEConfig(latent_dim=16, hidden_dims=(64,), epochs=30)
    v1, v2 = rq_vae(emb, 3, 8, seed=0, config=cfg), rq_vae(emb, 3, 8, seed=0, config=cfg)
    assert np.array_equal(v1, v2) and v1.shape == (N_ITEMS, 3) and v1.max() < 8
    assert len(np.unique(v1[:, 0])) > 1  # not collapsed onto one code


def test_index_save_load_and_lookup(tmp_path):
    idx = SemanticIndex(["x", "y"], np.array([[1, 2, 0], [1, 2, 1]]), [4, 4, 2], {"method": "hand"})
    back = SemanticIndex.load(idx.save(tmp_path / "sub" / "index.json"))
    assert back.items == ["x", "y"] and np.array_equal(back.codes, idx.codes) and back.codebook_sizes == [4, 4, 2]
    assert back.id_string("y") == "<a_1><b_2><c_1>" and back.item_of_text("<a_1><b_2><c_1>") == "y"
    assert back.item_of_text("<a_1><b_2><c_3>") is None and back.item_of((1, 2, 0)) == "x"
    assert len(back.all_tokens()) == 10
    with pytest.raises(ValueError, match="share a code"):
        SemanticIndex(["x", "y"], np.array([[1, 2], [1, 2]]), [4, 4])


def test_add_code_tokens_to_tiny_qwen(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    idx = SemanticIndex(["x", "y", "z"], np.array([[1, 2, 0], [1, 2, 1], [3, 0, 0]]), [4, 4, 2])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    old_vocab, old_rows = len(tok), model.get_input_embeddings().weight[:10].clone()
    ids = add_code_tokens(tok, model, idx)
    assert len(ids) == 10 and ids == list(range(old_vocab, old_vocab + 10))
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == old_vocab + 10 and (emb[:10] == old_rows).all()
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    assert emb[ids].std(0).mean() > 0  # distinct rows, not one copied mean
    enc = tok("bought <a_1><b_2><c_1> then", add_special_tokens=False)["input_ids"]
    assert idx.token_sequences(tok)[1] == [i for i in enc if i in ids]
    assert tok.decode(idx.token_sequences(tok)[2], skip_special_tokens=True) == "<a_3><b_0><c_0>"
    assert add_code_tokens(tok, model, idx) == ids and len(tok) == old_vocab + 10  # idempotent


def test_item_tokens_name_each_item_by_its_position_and_are_added_after_the_codes(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    idx = SemanticIndex(["x", "y", "z"], np.array([[1, 2, 0], [1, 2, 1], [3, 0, 0]]), [4, 4, 2])
    assert [idx.item_token(i) for i in ("z", "x")] == ["<item_2>", "<item_0>"]
    assert idx.item_tokens() == ["<item_0>", "<item_1>", "<item_2>"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    old_vocab = len(tok)
    ids = add_code_tokens(tok, model, idx, item_tokens=True)
    assert ids == list(range(old_vocab, old_vocab + 13)) and model.get_input_embeddings().weight.shape[0] == len(tok)
    enc = tok("<a_1><b_2><c_1><item_1>, <a_3><b_0><c_0><item_2>", add_special_tokens=False)["input_ids"]
    seqs = idx.token_sequences(tok)
    assert [i for i in enc if i in ids] == [*seqs[1], ids[11], *seqs[2], ids[12]]  # an item token is one token
