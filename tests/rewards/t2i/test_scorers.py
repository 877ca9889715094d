"""Image scorers on tiny random instances of the real model classes (CLIP, OWLv2, LLaVA), the pixel
composition checker on shapeworld images, and the OpenAI-compatible judge against a local fake server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from envs.reprompt import generate_training_prompts
from rewards.t2i.detector import Detection
from rewards.t2i.generators import write_tiny_clip_tokenizer
from rewards.t2i.geneval import ideal_rewrite
from rewards.t2i.scorers import (
    ClipScorer,
    CompositionChecker,
    Owlv2Detector,
    PickScoreScorer,
    VLMJudge,
    build_scorer,
    build_tiny_clip,
    nearest_color,
    parse_score,
    score_to_reward,
)
from rewards.t2i.shapeworld import render
from tests.helpers import requires_cuda


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def items():
    return generate_training_prompts(6, seed=3)


def _images(items, ideal=True):
    return [render(ideal_rewrite(it["metadata"]) if ideal else "nothing here", 5) for it in items]


# ---------------------------------------------------------------- CLIP / PickScore


def test_clip_scorer_is_scaled_cosine(tiny_clip, items):
    images, prompts = _images(items[:3]), [it["prompt"] for it in items[:3]]
    raw = ClipScorer(str(tiny_clip), batch_size=2).score(images, prompts)
    assert len(raw) == 3 and all(-1.0 <= v <= 1.0 for v in raw)
    scaled = build_scorer("clip", model_path=str(tiny_clip), scale=100.0).score(images, prompts)
    assert scaled == pytest.approx([100 * v for v in raw], rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="3 images but 2 prompts"):
        ClipScorer(str(tiny_clip)).score(images, prompts[:2])


def test_pickscore_uses_the_models_logit_scale(tiny_clip, items):
    images, prompts = _images(items[:2]), [it["prompt"] for it in items[:2]]
    pick = PickScoreScorer(str(tiny_clip))
    assert pick.scale == pytest.approx(float(pick.model.logit_scale.detach().exp()))
    raw = ClipScorer(str(tiny_clip)).score(images, prompts)
    assert pick.score(images, prompts) == pytest.approx([pick.scale * v for v in raw], rel=1e-4, abs=1e-4)


# ---------------------------------------------------------------- judge parsing


def test_parse_score_and_reprompt_mapping():
    assert parse_score("<score>7</score>") == 7.0
    assert parse_score("I think <score> 8.5 </score> overall") == 8.5
    assert parse_score("<score>9/10</score>") == 9.0
    assert parse_score("<SCORE>3</SCORE>") == 3.0
    for bad in (None, "", "7", "<score>eleven</score>", "<score>11</score>", "<score>-1</score>", "<score>7"):
        assert parse_score(bad) is None
    assert [score_to_reward(s) for s in (0.0, 5.0, 10.0, 7.0)] == [-1.0, 0.0, 1.0, 0.4]
    assert score_to_reward(None) is None and score_to_reward(None, -1.0) == -1.0


# ---------------------------------------------------------------- judge over HTTP


class _FakeChat(BaseHTTPRequestHandler):
    answer = "<score>7</score>"
    delay_s = 0.0
    requests: list = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        text = body["messages"][0]["content"][0]["text"]
        if "BROKEN" in text:
            self.send_response(500)
            self.end_headers()
            return
        if "SLOW" in text:
            time.sleep(self.delay_s)
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_endpoint():
    _FakeChat.requests = []
    _FakeChat.delay_s = 2.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_vlm_judge_over_openai_compatible_endpoint(fake_endpoint, monkeypatch, items):
    """The paid API is the one true external boundary, so it is the one fake in these tests: a local
    HTTP server on 127.0.0.1 speaking the chat-completions wire format with a canned answer."""
    monkeypatch.setenv("RELAY_TEST_JUDGE_KEY", "sk-test")
    judge = VLMJudge(endpoint=fake_endpoint, api_key_env="RELAY_TEST_JUDGE_KEY", model_name="judge-1", timeout_s=0.5)
    images = _images(items[:4])
    prompts = ["a red dog", "BROKEN prompt", "SLOW prompt", "two cats"]
    assert judge.score(images, prompts) == [0.4, None, None, 0.4]  # 7 -> (7-5)/5; HTTP 500 and timeout -> None
    req = next(r for r in _FakeChat.requests if '"a red dog"' in r["body"]["messages"][0]["content"][0]["text"])
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "judge-1"
    content = {part["type"]: part for part in req["body"]["messages"][0]["content"]}
    assert content["image_url"]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "<score>" in content["text"]["text"]

    monkeypatch.delenv("RELAY_TEST_JUDGE_KEY")
    fallback = VLMJudge(endpoint=fake_endpoint, api_key_env="RELAY_TEST_JUDGE_KEY", timeout_s=0.5, failure_value=-1.0)
    assert fallback.score(images[:2], ["a red dog", "BROKEN"]) == [0.4, -1.0]
    assert all(r["auth"] is None for r in _FakeChat.requests[-2:])  # no key in the env: no header


def test_vlm_judge_needs_exactly_one_backend():
    with pytest.raises(ValueError, match="exactly one of model_path"):
        VLMJudge()
    with pytest.raises(ValueError, match="exactly one of model_path"):
        VLMJudge(model_path="x", endpoint="http://127.0.0.1:1")


def test_vlm_judge_unreachable_endpoint_gives_failure_value(items):
    judge = VLMJudge(endpoint="http://127.0.0.1:9/v1", timeout_s=0.5, failure_value=0.0)
    assert judge.score(_images(items[:1]), ["a dog"]) == [0.0]


# ---------------------------------------------------------------- judge, local VLM

_VLM_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _build_tiny_llava(out: Path) -> Path:
    """LLaVA (CLIP vision tower + Qwen2 LM) at toy sizes; LlavaProcessor with the PIL image backend."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        Qwen2Config,
    )

    from rl.tiny_model import TinyModelSpec, build_tokenizer

    tok = build_tokenizer(TinyModelSpec(vocab_size=512))
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    text = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=_VLM_TEMPLATE,
    ).save_pretrained(out)
    return out


def test_vlm_judge_local_tiny_llava_runs_end_to_end(tmp_path, items):
    path = _build_tiny_llava(tmp_path / "llava")
    judge = VLMJudge(model_path=str(path), max_new_tokens=6, batch_size=2, failure_value=-1.0)
    assert type(judge.model).__name__ == "LlavaForConditionalGeneration"
    scores = judge.score(_images(items[:3]), [it["prompt"] for it in items[:3]])
    # A random model rarely writes a valid <score>; whatever it wrote went through parse_score.
    assert len(scores) == 3 and len(judge.last_texts) == 3
    assert scores == [score_to_reward(parse_score(t), -1.0) for t in judge.last_texts]


# ---------------------------------------------------------------- GenEval composition


def test_pixel_composition_checker_follows_geneval(items):
    checker = build_scorer("composition", detector="pixel")
    metas = [it["metadata"] for it in items]
    prompts = [it["prompt"] for it in items]
    assert checker.score(_images(items), prompts, metadata=metas) == [1.0] * len(items)
    assert checker.score(_images(items, ideal=False), prompts, metadata=[json.dumps(m) for m in metas]) == [0.0] * 6
    with pytest.raises(ValueError, match="needs a 'metadata' column"):
        checker.score(_images(items[:1]), prompts[:1])


def test_partial_composition_credit():
    meta = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]}
    checker = CompositionChecker(partial=True)
    assert checker.score([render("one dog on the left side. one cup on the right side.", 0)], ["x"], [meta]) == [0.5]


def _build_tiny_owlv2(out: Path) -> Path:
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    tok = write_tiny_clip_tokenizer(out / "_tokenizer_src", model_max_length=16)
    text = {
        "vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
    }  # fmt: skip
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": 32, "patch_size": 8}  # fmt: skip
    torch.manual_seed(0)
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(out)
    Owlv2Processor(
        image_processor=Owlv2ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tok
    ).save_pretrained(out)
    return out


def test_owlv2_composition_checker_runs_end_to_end(tmp_path, items):
    path = _build_tiny_owlv2(tmp_path / "owlv2")
    detector = Owlv2Detector(str(path), threshold=0.0)
    image = _images(items[1:2])[0]
    detections = detector.detect(image, ["dog", "traffic light"])
    assert detections and all(isinstance(d, Detection) for d in detections)
    for d in detections:
        x0, y0, x1, y1 = d.bbox
        assert d.cls in ("dog", "traffic light") and d.color in ("red", "orange", "yellow", "green", "blue",
                                                                 "purple", "pink", "brown", "black", "white")  # fmt: skip
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    checker = CompositionChecker(detector="owlv2", model_path=str(path), threshold=0.0)
    scores = checker.score(_images(items[:2]), [it["prompt"] for it in items[:2]], [it["metadata"] for it in items[:2]])
    assert len(scores) == 2 and all(s in (0.0, 1.0) for s in scores)


def test_nearest_color_and_checker_options():
    assert nearest_color((230, 25, 20)) == "red" and nearest_color((250, 250, 250)) == "white"
    with pytest.raises(ValueError, match="must be 'pixel' or 'owlv2'"):
        CompositionChecker(detector="yolo")
    with pytest.raises(ValueError, match="needs model_path"):
        CompositionChecker(detector="owlv2")
    with pytest.raises(ValueError, match="unknown image scorer 'imagereward'"):
        build_scorer("imagereward")


# ---------------------------------------------------------------- real sizes on a GPU


@requires_cuda("real-size CLIP-L and OWLv2-B architectures")
def test_real_size_clip_and_owlv2_on_cuda(tmp_path, items):
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
    )

    tok = write_tiny_clip_tokenizer(tmp_path / "tok")
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    clip_l = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, **ids},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                       "num_attention_heads": 16, "image_size": 224, "patch_size": 14},
        projection_dim=768,
    )  # fmt: skip
    CLIPModel(clip_l).save_pretrained(tmp_path / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tok).save_pretrained(tmp_path / "clip")
    images, prompts = _images(items[:4]), [it["prompt"] for it in items[:4]]
    assert len(ClipScorer(str(tmp_path / "clip"), device="cuda", dtype="float16").score(images, prompts)) == 4

    owl_tok = write_tiny_clip_tokenizer(tmp_path / "owl_tok", model_max_length=16)
    owl_ids = {
        "bos_token_id": owl_tok.bos_token_id,
        "eos_token_id": owl_tok.eos_token_id,
        "pad_token_id": owl_tok.pad_token_id,
    }
    Owlv2ForObjectDetection(Owlv2Config(text_config={"vocab_size": len(owl_tok), **owl_ids})).save_pretrained(
        tmp_path / "owl"
    )
    Owlv2Processor(image_processor=Owlv2ImageProcessorPil(), tokenizer=owl_tok).save_pretrained(tmp_path / "owl")
    checker = CompositionChecker("owlv2", str(tmp_path / "owl"), threshold=0.0, device="cuda")
    assert len(checker.score(images, prompts, [it["metadata"] for it in items[:4]])) == 4
