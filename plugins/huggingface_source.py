"""Model source for Hugging Face models through ``TransformerBridge.boot_transformers``.

Specs: a local directory holding a saved model and tokenizer
(``./my-model``, ``/abs/path``), a hub name (``gpt2``, ``EleutherAI/pythia-70m``),
optionally ``hf:`` prefixed, and ``NAME@REVISION`` for a hub revision.
Hub names need network access or a warm Hugging Face cache.

Loading options follow a ``?``, joined by ``&``, and go to ``boot_transformers``:
``hf:meta-llama/Llama-3.2-1B?dtype=bfloat16&device_map=auto``.

- ``dtype``: ``float32`` (default), ``float16`` / ``fp16`` / ``half``, ``bfloat16`` / ``bf16``.
- ``device_map``: where accelerate places the layers: ``auto``, ``balanced``,
  ``balanced_low_0``, ``sequential``, or one device (``cpu``, ``cuda:1``). It
  places the model itself, so the device option is not used.
- ``n_devices``: split the model across this many CUDA devices (``1``: one
  device, the device option's). Give ``device_map`` or ``n_devices``, not both.

Every load records the model's kind (:mod:`circuitcheck.model.kinds`): an
encoder, or a checkpoint without a trained language-model head, is refused by
causal and lens claims. transformers' weight-loading progress bars are off
while the model loads (and restored after).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import circuitcheck
from circuitcheck import ModelSpecError

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or os.sep in text and Path(text).expanduser().exists()


@circuitcheck.hookimpl(trylast=True)
def circuitcheck_load_model(spec: str, device: str):
    text, query = _split_options(spec[3:] if spec.startswith("hf:") else spec)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(
                f"local directory {text!r} holds no config.json, so it is not a saved Hugging Face model "
                f"(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
            )
        return _boot(str(path), device, revision=None, spec=spec, options=parse_options(query, spec))
    if _looks_like_path(text):
        if path.exists():
            raise ModelSpecError(f"{spec!r} is a file, not a directory: give the directory holding config.json and the weights")
        raise ModelSpecError(f"local model directory {text!r} does not exist (resolved to {str(path.resolve())!r})")
    name, _, revision = text.partition("@")
    if not _HUB_NAME.match(name) or (not spec.startswith("hf:") and ":" in spec):
        return None
    return _boot(name, device, revision=revision or None, spec=spec, options=parse_options(query, spec))


def _split_options(text: str) -> tuple[str, str | None]:
    """``"NAME?dtype=bf16"`` -> ``("NAME", "dtype=bf16")``; a directory whose own name holds ``?`` keeps it."""
    if "?" not in text or Path(text).expanduser().is_dir():
        return text, None
    name, _, query = text.partition("?")
    return name, query


#: dtype option values -> torch dtype names.
DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
#: accelerate's placement strategies (device_map values besides a single device).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
OPTIONS = ("dtype", "device_map", "n_devices")


def parse_options(query: str | None, spec: str) -> dict:
    """The ``boot_transformers`` arguments a spec's options give: ``dtype`` (a torch dtype), ``device_map``, ``n_devices``.

    ``query``: what follows the spec's ``?`` (``"dtype=bfloat16&device_map=auto"``),
    or None. A bad option is a :class:`ModelSpecError` naming it and the valid values.
    """
    if query is None:
        return {}
    import torch

    given: dict[str, str] = {}
    for item in query.split("&"):
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key or not value:
            raise ModelSpecError(f"model spec {spec!r}: option {item!r} is not KEY=VALUE (options: {', '.join(OPTIONS)}, "
                                 "e.g. ?dtype=bfloat16&device_map=auto)")
        if key not in OPTIONS:
            raise ModelSpecError(f"model spec {spec!r}: unknown option {key!r}; the Hugging Face source takes {', '.join(OPTIONS)}")
        if key in given:
            raise ModelSpecError(f"model spec {spec!r}: option {key!r} is given twice ({given[key]!r} and {value!r})")
        given[key] = value
    options: dict = {}
    if "dtype" in given:
        name = DTYPES.get(given["dtype"].lower())
        if name is None:
            raise ModelSpecError(f"model spec {spec!r}: dtype {given['dtype']!r} is not valid: use float32, float16 or bfloat16 "
                                 f"(or {', '.join(k for k in DTYPES if k not in ('float32', 'float16', 'bfloat16'))})")
        options["dtype"] = getattr(torch, name)
    if "device_map" in given and "n_devices" in given:
        raise ModelSpecError(f"model spec {spec!r}: give device_map or n_devices, not both "
                             f"(device_map={given['device_map']!r}, n_devices={given['n_devices']!r})")
    if "device_map" in given:
        options["device_map"] = _device_map(given["device_map"], spec)
    if "n_devices" in given:
        options["n_devices"] = _n_devices(given["n_devices"], spec)
    return options


def _device_map(value: str, spec: str) -> str:
    if value in DEVICE_MAP_STRATEGIES:
        return value
    from circuitcheck.model.sources import DeviceError, resolve_device

    try:
        return resolve_device(value)
    except DeviceError as error:
        raise ModelSpecError(f"model spec {spec!r}: device_map {value!r} is neither a placement strategy "
                             f"({', '.join(DEVICE_MAP_STRATEGIES)}) nor a device this machine has: {error}") from None


def _n_devices(value: str, spec: str) -> int:
    import torch

    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1 or str(count) != value:
        raise ModelSpecError(f"model spec {spec!r}: n_devices {value!r} is not valid: give a whole number of CUDA devices, 1 or more")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1 and count > available:
        raise ModelSpecError(f"model spec {spec!r}: n_devices={count} needs {count} CUDA devices; this machine has {available}")
    return count


@circuitcheck.hookimpl(trylast=True)
def circuitcheck_list_checkpoints(spec: str):
    """Local directories named with a ``{checkpoint}`` placeholder: the existing ones, in natural order."""
    text, _ = _split_options(spec[3:] if spec.startswith("hf:") else spec)
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
        "...?dtype=bfloat16&device_map=auto: Hugging Face loading options (dtype, device_map, n_devices)",
    ]


def _boot(name: str, device: str, revision: str | None, spec: str, options: dict):
    """Load through ``boot_transformers`` with the spec's options, quietly, and record the model's kind."""
    if not Path(name).is_dir() and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            raise ModelSpecError(f"could not load model {spec!r}: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
    from transformer_lens.model_bridge import TransformerBridge

    from circuitcheck.model.kinds import record_kind

    placed = "device_map" in options or options.get("n_devices", 1) > 1
    try:
        with quiet_loading():
            model = TransformerBridge.boot_transformers(name, device=None if placed else device, revision=revision, **options)
    except (OSError, ValueError) as error:
        where = "in that directory" if Path(name).is_dir() else "locally or on the hub (no network, or no such model?)"
        raise ModelSpecError(f"could not load model {spec!r}: no usable Hugging Face model was found {where}: {error}") from error
    record_kind(model)
    return model


@contextmanager
def quiet_loading():
    """transformers' progress bars (weight loading, and the hub's downloads) off inside, as they were after.

    A script or CI log that loads a model through circuitcheck gets no
    ``Loading weights: 100%|...`` lines. Left alone when the user asked for the
    bars with ``HF_HUB_DISABLE_PROGRESS_BARS=0``.
    """
    import importlib

    from huggingface_hub import constants
    from transformers.utils import logging as hf_logging

    if constants.HF_HUB_DISABLE_PROGRESS_BARS is False:
        yield
        return
    # transformers' switch also flips the hub's; the hub keeps per-group states, restored as they were.
    hub_states = getattr(importlib.import_module("huggingface_hub.utils.tqdm"), "progress_bar_states", None)
    saved_hub_states = dict(hub_states) if isinstance(hub_states, dict) else None
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
        if saved_hub_states is not None:
            hub_states.clear()
            hub_states.update(saved_hub_states)
