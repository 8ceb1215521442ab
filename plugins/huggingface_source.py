"""Model source for Hugging Face models through ``TransformerBridge.boot_transformers``.

Specs: a local directory holding a saved model and tokenizer
(``./my-model``, ``/abs/path``), a hub name (``gpt2``, ``EleutherAI/pythia-70m``),
optionally ``hf:`` prefixed, and ``NAME@REVISION`` for a hub revision.
Hub names need network access or a warm Hugging Face cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import circuitcheck
from circuitcheck import ModelSpecError

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.sep in text and Path(text).expanduser().exists()


@circuitcheck.hookimpl(trylast=True)
def circuitcheck_load_model(spec: str, device: str):
    text = spec[3:] if spec.startswith("hf:") else spec
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(
                f"local directory {text!r} holds no config.json, so it is not a saved Hugging Face model "
                f"(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
            )
        return _boot(str(path), device, revision=None, spec=spec)
    if _looks_like_path(text):
        if path.exists():
            raise ModelSpecError(f"{spec!r} is a file, not a directory: give the directory holding config.json and the weights")
        raise ModelSpecError(f"local model directory {text!r} does not exist (resolved to {str(path.resolve())!r})")
    name, _, revision = text.partition("@")
    if not _HUB_NAME.match(name) or (not spec.startswith("hf:") and ":" in spec):
        return None
    return _boot(name, device, revision=revision or None, spec=spec)


@circuitcheck.hookimpl(trylast=True)
def circuitcheck_list_checkpoints(spec: str):
    """Local directories named with a ``{checkpoint}`` placeholder: the existing ones, in natural order."""
    text = spec[3:] if spec.startswith("hf:") else spec
    if "{checkpoint}" not in text:
        return [] if _HUB_NAME.match(text.partition("@")[0]) else None
    pattern = Path(text).expanduser()
    prefix, _, suffix = pattern.name.partition("{checkpoint}")
    found = []
    for candidate in pattern.parent.glob(f"{prefix}*{suffix}"):
        if candidate.is_dir() and (candidate / "config.json").is_file():
            found.append(candidate.name[len(prefix): len(candidate.name) - len(suffix) if suffix else None])
    return sorted(found, key=_natural)


def _natural(text: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@circuitcheck.hookimpl
def circuitcheck_model_sources() -> list[str]:
    return [
        "DIRECTORY: a local Hugging Face model directory (config.json, weights, tokenizer); "
        "a {checkpoint} placeholder in it names checkpoint directories",
        "[hf:]NAME[@REVISION]: a Hugging Face hub model such as gpt2 (needs network or a warm cache)",
    ]


def _boot(name: str, device: str, revision: str | None, spec: str):
    if not Path(name).is_dir() and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            raise ModelSpecError(f"could not load model {spec!r}: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(name, device=device, revision=revision)
    except (OSError, ValueError) as error:
        where = "in that directory" if Path(name).is_dir() else "locally or on the hub (no network, or no such model?)"
        raise ModelSpecError(f"could not load model {spec!r}: no usable Hugging Face model was found {where}: {error}") from error
