"""Image scorers: each ``score(images, prompts, ...) -> list[float | None]``, usable alone.

* ``ClipScorer`` — transformers ``CLIPModel``: ``scale * cos(image, text)``. ``scale=1`` (default)
  gives the raw cosine (~0.2-0.35 for matching pairs with OpenAI CLIP); ``scale=100`` gives
  CLIPScore's units (torchmetrics' ``CLIPScore`` additionally clamps at 0; this does not).
* ``PickScoreScorer`` — PickScore (Kirstain et al. 2023): a CLIP-H fine-tuned on Pick-a-Pic, same
  ``CLIPModel`` code path, scored as ``logit_scale.exp() * cos`` (~18-23 for real images).
  ImageReward (THUDM) is not offered: its package pins an old ``timm``/``fairscale`` stack and
  imports torchvision, which this environment cannot install.
* ``VLMJudge`` — a VLM rates the image 0-10 inside ``<score>`` tags; the reward is ``(s - 5) / 5``
  in [-1, 1] as RePrompt maps it. A local transformers VLM (``AutoModelForImageTextToText`` +
  ``AutoProcessor``) or any OpenAI-compatible chat-completions endpoint (image sent as base64 PNG,
  API key only from the environment variable ``api_key_env``). Unparseable answers, HTTP errors and
  timeouts give ``failure_value`` (None by default: the sample is unscored, and counted).
* ``CompositionChecker`` — GenEval: an object detector + ``geneval.check`` on the prompt's
  metadata. ``detector="pixel"`` decodes shapeworld glyphs; ``"owlv2"`` runs OWLv2 open-vocabulary
  detection with the metadata's class names as queries, colors by the box's mean pixel mapped to
  the nearest GenEval color.

``build_tiny_clip(path)`` writes a tiny random CLIP (model + processor) for tests and smoke runs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rewards.t2i.detector import Detection, detect
from rewards.t2i.generators import resolve_device, write_tiny_clip_tokenizer
from rewards.t2i.geneval import as_metadata, clause_results
from rewards.t2i.shapeworld import PALETTE

logger = logging.getLogger(__name__)

_DTYPES = ("float32", "float16", "bfloat16")


def _torch_dtype(dtype: str):
    import torch

    if dtype not in _DTYPES:
        raise ValueError(f"dtype ({dtype!r}) must be one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _check_lengths(images: Sequence[Any], prompts: Sequence[str]) -> None:
    if len(images) != len(prompts):
        raise ValueError(f"score: {len(images)} images but {len(prompts)} prompts; give one prompt per image")


def _load_processor(path: str):
    """AutoProcessor with the PIL image backend (``use_fast=False``): torchvision is not installed."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, use_fast=False)


# ---------------------------------------------------------------- CLIP family


class ClipScorer:
    """``scale * cosine(image embedding, text embedding)`` from a transformers ``CLIPModel``."""

    def __init__(
        self,
        model_path: str,
        processor_path: str | None = None,
        scale: float = 1.0,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 32,
    ):
        from transformers import CLIPModel

        self.device = resolve_device(device)
        self.scale = scale
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(model_path, dtype=_torch_dtype(dtype)).to(self.device).eval()
        self.processor = _load_processor(processor_path or model_path)

    def _cosines(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        for start in range(0, len(images), self.batch_size):
            inputs = self.processor(
                text=list(prompts[start : start + self.batch_size]),
                images=[im.convert("RGB") for im in images[start : start + self.batch_size]],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.processor.tokenizer.model_max_length,
            ).to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                img = self.model.get_image_features(pixel_values=inputs["pixel_values"])  # [B, D]
                txt = self.model.get_text_features(
                    input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
                )  # [B, D]
            img = getattr(img, "pooler_output", img)
            txt = getattr(txt, "pooler_output", txt)
            cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)  # [B]
            out.extend(cos.tolist())
        return out

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str], **_: Any) -> list[float | None]:
        _check_lengths(images, prompts)
        return [self.scale * c for c in self._cosines(images, prompts)]


class PickScoreScorer(ClipScorer):
    """PickScore: ``logit_scale.exp() * cosine`` (the model's own temperature, ~100 for PickScore_v1).

    ``model_path`` is ``yuvalkirstain/PickScore_v1`` (or a local copy); its processor is CLIP-H's,
    ``processor_path="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"``, when the checkpoint ships none.
    """

    def __init__(self, model_path: str, processor_path: str | None = None, **kwargs: Any):
        super().__init__(model_path, processor_path, scale=1.0, **kwargs)
        self.scale = float(self.model.logit_scale.exp().item())


# ---------------------------------------------------------------- VLM judge

JUDGE_PROMPT = (
    'You are judging a text-to-image model. Description: "{prompt}"\n'
    "Rate from 0 to 10 how faithfully the image shows this description: every object, its count, "
    "its color and its position. 0 = unrelated, 10 = perfect. Reply with the rating only, inside "
    "<score></score> tags, for example <score>7</score>."
)
_SCORE = re.compile(r"<score>\s*([+-]?\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?</score>", re.I)


def parse_score(text: str | None) -> float | None:
    """The first ``<score>x</score>`` rating in ``text`` when 0 <= x <= 10, else None."""
    if not text:
        return None
    found = _SCORE.search(text)
    if not found:
        return None
    value = float(found.group(1))
    return value if 0.0 <= value <= 10.0 else None


def score_to_reward(score: float | None, failure_value: float | None = None) -> float | None:
    """RePrompt's mapping of a 0-10 rating to [-1, 1]: (s - 5) / 5; no rating -> ``failure_value``."""
    return failure_value if score is None else (score - 5.0) / 5.0


def _png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMJudge:
    """A VLM rates each (image, original prompt) pair 0-10; the score is ``(s - 5) / 5``.

    Exactly one of ``model_path`` (local transformers VLM, greedy decoding) or ``endpoint`` (base URL of
    an OpenAI-compatible server, e.g. ``http://host:8000/v1``; ``/chat/completions`` is appended) is
    given. ``timeout_s`` bounds each HTTP request; ``failure_value`` is returned for a sample whose
    request failed or whose answer has no valid ``<score>``. The key is read from ``$api_key_env``
    (never from config); a missing key sends no Authorization header (local vLLM servers need none).
    """

    def __init__(
        self,
        model_path: str | None = None,
        endpoint: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        model_name: str = "gpt-4o-mini",
        timeout_s: float = 30.0,
        failure_value: float | None = None,
        prompt_template: str = JUDGE_PROMPT,
        max_new_tokens: int = 16,
        max_concurrency: int = 8,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
    ):
        if (model_path is None) == (endpoint is None):
            raise ValueError(
                "VLMJudge: give exactly one of model_path (local VLM) or endpoint (OpenAI-compatible URL); "
                f"got model_path={model_path!r}, endpoint={endpoint!r}"
            )
        if "{prompt}" not in prompt_template:
            raise ValueError("VLMJudge: prompt_template must contain '{prompt}'")
        self.endpoint = endpoint
        self.api_key_env = api_key_env
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.failure_value = failure_value
        self.prompt_template = prompt_template
        self.max_new_tokens = max_new_tokens
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.last_texts: list[str | None] = []  # raw judge answers of the latest call (debugging)
        if model_path is not None:
            from transformers import AutoModelForImageTextToText

            self.device = resolve_device(device)
            self.model = (
                AutoModelForImageTextToText.from_pretrained(model_path, dtype=_torch_dtype(dtype))
                .to(self.device)
                .eval()
            )
            self.processor = _load_processor(model_path)
            self.processor.tokenizer.padding_side = "left"  # decoder-only batched generation

    # -- local model
    def _local_answers(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str | None]:
        import torch

        answers: list[str | None] = []
        for start in range(0, len(images), self.batch_size):
            chunk_imgs = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            texts = []
            for p in prompts[start : start + self.batch_size]:
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": self.prompt_template.format(prompt=p)}],
                    }
                ]
                texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            inputs = self.processor(images=chunk_imgs, text=texts, return_tensors="pt", padding=True).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = out[:, inputs["input_ids"].shape[1] :]  # [B, T_new]
            answers.extend(self.processor.batch_decode(new, skip_special_tokens=True))
        return answers

    # -- HTTP endpoint
    def _url(self) -> str:
        base = str(self.endpoint).rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def _request(self, image: Image.Image, prompt: str) -> str | None:
        body = {
            "model": self.model_name,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": self.prompt_template.format(prompt=prompt)},
                        {"type": "image_url", "image_url": {"url": _png_data_url(image)}},
                    ],
                }
            ],
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self._url(), data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                payload = json.loads(response.read().decode("utf-8"))
            return str(payload["choices"][0]["message"]["content"])
        except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            logger.warning("VLMJudge: request to %s failed: %s", self._url(), exc)
            return None

    def _endpoint_answers(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.max_concurrency, len(images)))) as pool:
            return list(pool.map(self._request, images, prompts))

    def score(self, images: Sequence[Image.Image], prompts: Sequence[str], **_: Any) -> list[float | None]:
        _check_lengths(images, prompts)
        if not images:
            return []
        answers = self._endpoint_answers(images, prompts) if self.endpoint else self._local_answers(images, prompts)
        self.last_texts = answers
        return [score_to_reward(parse_score(a), self.failure_value) for a in answers]


# ---------------------------------------------------------------- GenEval composition

_COLOR_NAMES = list(PALETTE)
_COLOR_RGB = np.array([PALETTE[c] for c in _COLOR_NAMES], dtype=np.float64)  # [10, 3]


def nearest_color(rgb: Sequence[float]) -> str:
    """The GenEval color name whose palette entry is nearest (Euclidean RGB) to ``rgb``."""
    dist = ((_COLOR_RGB - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)
    return _COLOR_NAMES[int(dist.argmin())]


class Owlv2Detector:
    """OWLv2 open-vocabulary detection -> ``Detection`` records (class, color, pixel bbox, centre).

    Queries are the class names asked for; boxes above ``threshold`` are kept, highest confidence
    first (GenEval sorts by confidence before taking the first ``count``), at most ``max_per_class``.
    """

    def __init__(
        self,
        model_path: str,
        threshold: float = 0.1,
        device: str = "cpu",
        dtype: str = "float32",
        max_per_class: int = 16,
    ):
        from transformers import Owlv2ForObjectDetection

        self.device = resolve_device(device)
        self.threshold = threshold
        self.max_per_class = max_per_class
        self.model = (
            Owlv2ForObjectDetection.from_pretrained(model_path, dtype=_torch_dtype(dtype)).to(self.device).eval()
        )
        self.processor = _load_processor(model_path)

    def detect(self, image: Image.Image, classes: Sequence[str]) -> list[Detection]:
        import torch

        image = image.convert("RGB")
        queries = list(dict.fromkeys(classes))
        if not queries:
            return []
        inputs = self.processor(
            text=[[f"a photo of a {c}" for c in queries]], images=image, return_tensors="pt", truncation=True
        )
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        # OWLv2 pads to a square at the bottom/right: boxes are relative to the padded side.
        side = max(image.size)
        result = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=self.threshold, target_sizes=torch.tensor([[side, side]])
        )[0]
        rgb = np.asarray(image)  # [H, W, 3]
        w, h = image.size
        order = result["scores"].float().argsort(descending=True).tolist()
        per_class: dict[str, int] = {}
        detections = []
        for k in order:
            cls = queries[int(result["labels"][k])]
            if per_class.get(cls, 0) >= self.max_per_class:
                continue
            x0, y0, x1, y1 = (float(v) for v in result["boxes"][k].tolist())
            # Outward rounding, clipped to the unpadded image: a sub-pixel box still covers a pixel.
            x0, x1 = min(max(math.floor(x0), 0), w), min(max(math.ceil(x1), 0), w)
            y0, y1 = min(max(math.floor(y0), 0), h), min(max(math.ceil(y1), 0), h)
            if x1 <= x0 or y1 <= y0:
                continue
            color = nearest_color(rgb[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0))
            per_class[cls] = per_class.get(cls, 0) + 1
            detections.append(Detection(cls, color, (x0, y0, x1, y1), ((x0 + x1) / 2, (y0 + y1) / 2)))
        return detections


def metadata_classes(meta: dict) -> list[str]:
    """Class names a GenEval record asks about (include then exclude), without repeats."""
    return list(dict.fromkeys(r["class"] for key in ("include", "exclude") for r in meta.get(key, [])))


class CompositionChecker:
    """GenEval's verdict per image: 1.0 when every clause of the metadata holds, else 0.0
    (``partial=True``: the fraction of clauses that hold). Needs the ``metadata`` column."""

    needs_metadata = True

    def __init__(
        self,
        detector: str = "pixel",
        model_path: str | None = None,
        threshold: float = 0.1,
        partial: bool = False,
        device: str = "cpu",
        dtype: str = "float32",
    ):
        if detector not in ("pixel", "owlv2"):
            raise ValueError(f"CompositionChecker: detector ({detector!r}) must be 'pixel' or 'owlv2'")
        if detector == "owlv2" and not model_path:
            raise ValueError(
                "CompositionChecker: detector='owlv2' needs model_path (e.g. google/owlv2-base-patch16-ensemble)"
            )
        self.detector = detector
        self.partial = partial
        self._owl = Owlv2Detector(model_path, threshold, device, dtype) if detector == "owlv2" else None

    def detections(self, image: Image.Image, meta: dict) -> list[Detection]:
        if self._owl is None:
            return detect(image)
        return self._owl.detect(image, metadata_classes(meta))

    def score(
        self, images: Sequence[Image.Image], prompts: Sequence[str], metadata: Sequence[Any] | None = None, **_: Any
    ) -> list[float | None]:
        _check_lengths(images, prompts)
        if metadata is None or len(metadata) != len(images):
            raise ValueError(
                f"CompositionChecker needs a 'metadata' column with one GenEval record per image; "
                f"got {None if metadata is None else len(metadata)} for {len(images)} images"
            )
        out: list[float | None] = []
        for image, raw in zip(images, metadata, strict=True):
            meta = as_metadata(raw)
            passed = [ok for ok, _ in clause_results(self.detections(image, meta), meta)]
            out.append(sum(passed) / len(passed) if self.partial else float(all(passed)))
        return out


SCORERS = {
    "clip": ClipScorer,
    "pickscore": PickScoreScorer,
    "vlm_judge": VLMJudge,
    "composition": CompositionChecker,
}


def build_scorer(name: str, **kwargs: Any):
    """One scorer by name: clip, pickscore, vlm_judge or composition."""
    if name not in SCORERS:
        raise ValueError(f"unknown image scorer {name!r}; known: {', '.join(SCORERS)}")
    return SCORERS[name](**kwargs)


# ---------------------------------------------------------------- tiny random CLIP (tests, smoke runs)


def build_tiny_clip(out_dir: str | Path, seed: int = 0, image_size: int = 32) -> Path:
    """Write a tiny random ``CLIPModel`` + ``CLIPProcessor`` (PIL image backend) to ``out_dir``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    out = Path(out_dir)
    tokenizer = write_tiny_clip_tokenizer(out / "_tokenizer_src")
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    size = {"shortest_edge": image_size}
    crop = {"height": image_size, "width": image_size}
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(size=size, crop_size=crop), tokenizer=tokenizer)
    processor.save_pretrained(out)
    return out
