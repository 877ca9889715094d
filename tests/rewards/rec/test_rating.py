import pytest
import torch

from rewards.rec.rating import RatingPredictor, RatingReward, parse_rating, rating_score


@pytest.mark.parametrize(
    "text, value",
    [
        ("<rating>4.50</rating>", 4.5),
        ("I think <rating> 3 </rating> and <rating>5</rating>", 3.0),  # the first one counts
        ("<rating>.5</rating>", 0.5),
        ("<rating>4.</rating>", 4.0),
        ("<rating>four</rating>", None),
        ("<rating>4.5", None),  # unclosed
        ("4.5", None),
        ("<rating>1e999</rating>", None),
        ("", None),
    ],
)
def test_parse_rating(text, value):
    assert parse_rating(text) == value


def test_rating_score():
    assert rating_score(4.0, 4.0) == 1.0
    assert rating_score(3.0, 5.0) == 0.5
    assert rating_score(9.0, 1.0) == 0.0  # clipped to 5
    assert rating_score(1.0, 5.0) == 0.0


class StubPredictor:
    lo, hi = 1.0, 5.0

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def predict(self, users, items, titles):
        self.calls.append((list(users), list(items), list(titles)))
        return [self.answers[u] for u in users]


def test_rating_reward_with_stub():
    from envs.duet import rating_reward

    def blk(name, profile):
        return f"<{name}><cue>c</cue><constructed_prompt>p</constructed_prompt><profile>{profile}</profile></{name}>"

    stub = StubPredictor({"U1": 4.0, "U2": None})
    fn = rating_reward(stub)
    completions = [
        blk("user_profile", "U1") + blk("item_profile", "I1"),
        "garbage",
        blk("user_profile", "U2") + blk("item_profile", "I2"),
    ]
    out = fn(["p"] * 3, completions, rating=[5, 3, 2], item_title=["T1", "T2", "T3"])
    assert out == [0.75, -1.0, -1.0]
    assert stub.calls == [(["U1", "U2"], ["I1", "I2"], ["T1", "T3"])]  # one batched call, failures skipped
    fn2 = RatingReward(stub, lambda t: ("U2", "I"), unparsed_prediction=None)
    assert fn2(["p"], ["x"], rating=[3], item_title=["t"]) == [None]


def test_tiny_model_batched_generation(tiny_model_dir):
    pred = RatingPredictor(tiny_model_dir, max_new_tokens=6, batch_size=3)
    prompt = pred.build_prompt("likes pens", "a blue pen", "Blue Pen")
    assert prompt.endswith("<rating>") and "Item title: Blue Pen" in prompt
    prompts = [pred.build_prompt(u, "item", "title") for u in ["a", "likes science lab tools very much", "b c d"]]
    batched = pred.generate(prompts)
    assert batched == [pred.generate([p])[0] for p in prompts]  # left padding does not change greedy outputs
    values = pred.predict(["a", "b"], ["c", "d"], ["e", "f"])
    assert len(values) == 2 and all(v is None or isinstance(v, float) for v in values)
    fn = RatingReward(pred, lambda t: ("u", "i"))
    out = fn(["p", "p"], ["x", "y"], rating=[4, 2], item_title=["t", "t"])
    assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in out)


def test_engine_resolution_and_vllm_request():
    import importlib.util

    import torch

    from rewards.rec.rating import resolve_engine, vllm_sampling_kwargs

    assert resolve_engine("hf") == "hf" and resolve_engine("vllm") == "vllm"
    has_vllm = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    assert resolve_engine("auto") == ("vllm" if has_vllm else "hf")
    with pytest.raises(ValueError, match="'auto', 'hf' or 'vllm'"):
        resolve_engine("tgi")
    # Greedy, one answer, stopped at (and keeping) the closing tag, so parse_rating sees a closed tag.
    kw = vllm_sampling_kwargs(8)
    assert kw == {
        "n": 1,
        "temperature": 0.0,
        "max_tokens": 8,
        "stop": ["</rating>"],
        "include_stop_str_in_output": True,
    }
    assert parse_rating("<rating>" + "4.25</rating>") == 4.25


def test_auto_engine_on_cpu_is_transformers(tiny_model_dir):
    if torch_cuda():
        pytest.skip("a CUDA machine may resolve 'auto' to vLLM; this checks the CPU fallback")
    pred = RatingPredictor(tiny_model_dir, engine="auto", max_new_tokens=4)
    assert pred.engine == "hf"


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_vllm_predictor_matches_transformers(tmp_path):
    """vLLM's CPU build here (``make install``), its GPU build on a GPU machine: none skipped. The model has
    attention head size 32 (hidden 64, 2 heads), the smallest vLLM's CPU kernels support."""
    from rl.tiny_model import TinyModelSpec, build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-h32", TinyModelSpec(num_attention_heads=2, num_key_value_heads=1))
    hf = RatingPredictor(
        model, engine="hf", max_new_tokens=6, device="cuda" if torch_cuda() else "cpu", dtype=torch.float32
    )
    vl = RatingPredictor(model, engine="vllm", max_new_tokens=6, dtype=torch.float32,
                         vllm_kwargs={"enforce_eager": True, "max_model_len": 512, "seed": 0})  # fmt: skip
    prompts = [hf.build_prompt(u, "a blue pen", "Blue Pen") for u in ["likes pens", "hates ink", "a b c"]]
    # Greedy decoding of the same text: the same tokens, up to the closing tag vLLM stops at.
    try:
        pairs = list(zip(hf.generate(prompts), vl.generate(prompts), strict=True))
    finally:
        vl.close()
    assert all(b for _, b in pairs), "vLLM wrote nothing: nothing compared"
    for a, b in pairs:
        assert a.startswith(b.removesuffix("</rating>")) or b.startswith(a)
