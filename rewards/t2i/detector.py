"""Pixel-level object detector for shapeworld images.

Works from pixels only: the background is the most common border color; every other connected
region is a candidate glyph. A glyph is square; its fill (most common color in the region) gives the
color (nearest GenEval palette entry); its 3x3 marker grid, sampled at cell centres, gives the class.
Regions that are not square, too small, lack the centre anchor, or carry an unknown code are
ignored, as a real detector ignores clutter below its confidence threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from rewards.t2i.shapeworld import CLASS_NAMES, PALETTE, RING

_PALETTE_NAMES = list(PALETTE)
_PALETTE_RGB = np.array([PALETTE[c] for c in _PALETTE_NAMES], dtype=np.float64)  # [10, 3]
MIN_SIDE = 12  # px; smaller regions cannot hold a decodable 3x3 grid


@dataclass(frozen=True)
class Detection:
    cls: str
    color: str
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive), pixels
    center: tuple[float, float]  # x, y; y grows downwards as in GenEval


def _background(rgb: np.ndarray) -> np.ndarray:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])  # [4*S, 3]
    colors, counts = np.unique(border, axis=0, return_counts=True)
    return colors[counts.argmax()]


def _nearest_color(rgb: np.ndarray) -> str:
    dist = ((_PALETTE_RGB - rgb.astype(np.float64)) ** 2).sum(axis=1)
    return _PALETTE_NAMES[int(dist.argmin())]


def _decode(crop: np.ndarray, region: np.ndarray) -> tuple[str, str] | None:
    """(class, color) of one square region crop [S, S, 3], or None when it is not a valid glyph."""
    pixels = crop[region]
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    fill = colors[counts.argmax()]
    side = crop.shape[0]
    cell = side / 4
    margin = cell / 2

    def marked(r: int, c: int) -> bool:
        y, x = int(margin + (r + 0.5) * cell), int(margin + (c + 0.5) * cell)
        return bool(np.any(crop[y, x] != fill))

    if not marked(1, 1):
        return None
    code = sum(1 << bit for bit, (r, c) in enumerate(RING) if marked(r, c))
    if not 1 <= code <= len(CLASS_NAMES):
        return None
    return CLASS_NAMES[code - 1], _nearest_color(fill)


def detect(image: Image.Image) -> list[Detection]:
    """All glyphs in ``image``, in raster order of their top-left corners."""
    rgb = np.asarray(image.convert("RGB"))  # [H, W, 3]
    foreground = np.any(rgb != _background(rgb), axis=-1)  # [H, W]
    labels, _ = ndimage.label(foreground)
    detections = []
    for index, slc in enumerate(ndimage.find_objects(labels), start=1):
        if slc is None:
            continue
        ys, xs = slc
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if h != w or h < MIN_SIDE:
            continue
        decoded = _decode(rgb[slc], labels[slc] == index)
        if decoded is None:
            continue
        cls, color = decoded
        bbox = (xs.start, ys.start, xs.stop, ys.stop)
        detections.append(Detection(cls, color, bbox, ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)))
    return sorted(detections, key=lambda d: (d.bbox[1], d.bbox[0]))
