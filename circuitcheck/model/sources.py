"""The plugin manager and model loading through the model-source hooks."""

from __future__ import annotations

import inspect
import threading

import pluggy

from .. import hookspecs
from ..errors import CircuitCheckError, ModelSpecError

hookimpl = pluggy.HookimplMarker("circuitcheck")

_lock = threading.Lock()
_manager: "CircuitCheckPluginManager | None" = None


class CircuitCheckPluginManager(pluggy.PluginManager):
    """Accepts marked hookimpls and, like pytest, plain functions named ``circuitcheck_*``."""

    def parse_hookimpl_opts(self, plugin, name):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("circuitcheck_"):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts


def plugin_manager() -> CircuitCheckPluginManager:
    """The process-wide plugin manager, with installed entry-point plugins loaded once."""
    global _manager
    with _lock:
        if _manager is None:
            manager = CircuitCheckPluginManager("circuitcheck")
            manager.add_hookspecs(hookspecs)
            manager.load_setuptools_entrypoints("circuitcheck")
            _manager = manager
        return _manager


def register(plugin, name: str | None = None) -> None:
    """Register a plugin object (a module or class with ``circuitcheck_*`` hooks)."""
    manager = plugin_manager()
    if not manager.is_registered(plugin):
        manager.register(plugin, name=name)


def unregister(plugin) -> None:
    manager = plugin_manager()
    if manager.is_registered(plugin):
        manager.unregister(plugin)


def has_hooks(plugin) -> bool:
    return any(name.startswith("circuitcheck_") and inspect.isroutine(getattr(plugin, name, None)) for name in dir(plugin))


def model_sources() -> list[str]:
    lines: list[str] = []
    for contributed in plugin_manager().hook.circuitcheck_model_sources():
        lines.extend(contributed or [])
    return lines


class DeviceError(CircuitCheckError, ValueError):
    """A device that torch does not know, or that this machine does not have."""


def resolve_device(device: str | None) -> str:
    """``"auto"``/None -> ``"cuda"`` when available, else ``"cpu"``; others must name a device this machine has.

    ``cuda`` / ``cuda:N`` need CUDA and an N below the device count, ``mps``
    needs Apple's backend: asked for and missing is an error here, not a
    torch assertion at the first forward pass.
    """
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    valid = "use auto, cpu, cuda, cuda:N or mps"
    if not isinstance(device, str):
        raise DeviceError(f"device {device!r} is not valid: {valid} (a string), got {type(device).__name__}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise DeviceError(f"device {device!r} is not valid: {valid} ({error})") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {device!r} is not available: this machine has no CUDA device (use cpu or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device {device!r} is not available: this machine has CUDA devices cuda:0-cuda:{count - 1}")
    elif parsed.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} is not available: this machine has no MPS backend (use cpu or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r} is not supported: {valid}")
    return device


def with_checkpoint(spec: str, checkpoint: str) -> str:
    """The spec of ``spec``'s model at ``checkpoint``: ``{checkpoint}`` filled in, else ``spec@checkpoint``.

    Loading options stay last: ``hf:NAME?dtype=bfloat16`` -> ``hf:NAME@step1?dtype=bfloat16``.
    """
    if "{checkpoint}" in spec:
        return spec.replace("{checkpoint}", str(checkpoint))
    name, mark, options = spec.partition("?")
    if "@" in name:
        raise ModelSpecError(f"model spec {spec!r} already names a checkpoint, so it cannot also run over checkpoints ({checkpoint!r})")
    return f"{name}@{checkpoint}{mark}{options}"


def list_checkpoints(spec: str) -> list[str]:
    """The checkpoints the model sources know for ``spec`` (empty when none can list them)."""
    listed = plugin_manager().hook.circuitcheck_list_checkpoints(spec=spec)
    return list(listed or [])


def load_model(spec: str, device: str | None = "auto"):
    """Load a model by spec through the model-source plugins, in eval mode without gradients.

    >>> model = load_model("zoo:induction-2l")        # doctest: +SKIP
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"model spec {spec!r} is not valid: give a string such as 'zoo:induction-2l'")
    spec = spec.strip()
    device = resolve_device(device)
    try:
        model = plugin_manager().hook.circuitcheck_load_model(spec=spec, device=device)
    except OSError as error:  # e.g. a spec too long to be a path, asked of the file system by a source
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        raise ModelSpecError(f"model spec {shown!r} cannot be loaded: {error.strerror or error} "
                             "(give a zoo:NAME, a local model directory or a hub name)") from None
    if model is None:
        sources = "\n".join(f"  - {line}" for line in model_sources()) or "  (no model sources are installed)"
        raise ModelSpecError(f"no model source recognises the spec {spec!r}. Known sources:\n{sources}")
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        model.circuitcheck_spec = spec
        name = spec.partition("?")[0]  # loading options (hf:NAME@REVISION?dtype=bfloat16) are not the checkpoint
        if "@" in name:  # zoo:NAME@STEP, NAME@REVISION
            model.circuitcheck_checkpoint = name.rpartition("@")[2]
    except (AttributeError, TypeError):  # pragma: no cover - exotic model classes
        pass
    return model
