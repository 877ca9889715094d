"""Detector round trips: explicit scenes come back exactly, from pixels alone."""

import random
from collections import Counter

from PIL import Image, ImageDraw

from rewards.t2i.detector import detect
from rewards.t2i.shapeworld import BACKGROUND, CLASS_NAMES, COLORS, render, scene


def test_every_class_and_color_round_trips():
    for k, name in enumerate(CLASS_NAMES):
        color = COLORS[k % len(COLORS)]
        prompt = f"a plain simple picture with one {color} {name} and nothing else at all"
        (det,) = detect(render(prompt, k))
        assert (det.cls, det.color) == (name, color)


def test_round_trip_matches_scene_exactly():
    rng = random.Random(0)
    for seed in range(25):
        a, b = rng.sample(CLASS_NAMES, 2)
        ca, cb = rng.sample(COLORS, 2)
        prompt = (
            f"A clear picture on a plain background: {rng.randint(1, 4)} {ca} {a} on the left side, "
            f"{rng.randint(1, 4)} {cb} {b} on the right side."
        )
        truth = sorted((p.cls, p.color, p.x, p.y, p.x + p.side, p.y + p.side) for p in scene(prompt, seed))
        got = sorted((d.cls, d.color, *d.bbox) for d in detect(render(prompt, seed)))
        assert got == truth


def test_sides_and_counts_come_back():
    prompt = "A plain picture: 3 red dogs on the left side, 2 blue cats on the right side, one vase in the top half."
    for seed in range(10):
        dets = detect(render(prompt, seed))
        assert Counter((d.cls, d.color) for d in dets if d.cls != "vase") == Counter(
            {("dog", "red"): 3, ("cat", "blue"): 2}
        )
        assert [d.cls for d in dets].count("vase") == 1
        assert all(d.center[0] < 64 for d in dets if d.cls == "dog")
        assert all(d.center[0] > 64 for d in dets if d.cls == "cat")
        assert all(d.center[1] < 64 for d in dets if d.cls == "vase")


def test_clutter_is_ignored():
    img = Image.new("RGB", (128, 128), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.rectangle([5, 5, 40, 20], fill=(220, 30, 30))  # not square
    draw.rectangle([60, 60, 83, 83], fill=(40, 80, 220))  # square without anchor/code
    draw.rectangle([100, 100, 104, 104], fill=(0, 0, 0))  # tiny
    assert detect(img) == []
    assert detect(Image.new("RGB", (64, 64), (255, 255, 255))) == []
