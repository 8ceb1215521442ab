"""Activation-patching sweeps: one kind of activation patched at every index, built on ``Patcher.run``.

A sweep is the batched counterpart of TransformerLens's ``get_act_patch_*``
functions: one variant per (layer, position), (layer, head) or
(layer, position, head), all run through the patcher's batched forwards.
:data:`LAYER_POS` and :data:`LAYER_HEAD` name the sweeps and the hook point each patches.
Path sweeps (:func:`circuitcheck.engine.paths.path_sweep`) are :class:`Sweep` s too.

In a notebook a sweep shows as the report's heatmap (``_repr_html_``) and
:meth:`Sweep.plot` draws it; both are drawn by :mod:`circuitcheck.report.notebook`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..errors import CircuitCheckError, ComponentError
from ..model import context
from ..model.components import model_label
from ..model.tasks import Task
from .patches import Patch

#: layer x position sweeps: name -> hook point in each block
LAYER_POS = {"resid_pre": "hook_resid_pre", "resid_mid": "hook_resid_mid", "resid_post": "hook_resid_post",
             "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}
#: layer x head sweeps (all positions): name -> hook point in each block
LAYER_HEAD = {"head_out": "attn.hook_z", "head_q": "attn.hook_q", "head_k": "attn.hook_k", "head_v": "attn.hook_v",
              "pattern": "attn.hook_pattern"}
#: every sweep, in the order errors list them
SWEEPS = (*LAYER_POS, *LAYER_HEAD, "head_out_by_pos")


def sweep(patcher, task: Task, what: str, *, direction: str = "denoise") -> "Sweep":
    """Activation patching of one kind of activation at every index (see :meth:`Patcher.sweep`)."""
    if direction not in ("denoise", "noise"):
        raise ValueError(f"direction={direction!r} is not valid: use 'denoise' or 'noise'")
    base, source = ("corrupt", "clean") if direction == "denoise" else ("clean", "corrupt")
    model = patcher.model
    cfg = model.cfg
    layers, heads, positions = range(cfg.n_layers), range(cfg.n_heads), range(task.seq_len)
    if what in LAYER_POS:
        if what in ("mlp_out", "resid_mid") and getattr(cfg, "attn_only", False):
            raise ComponentError(f"model {model_label(model)} is attention-only: it has no {what}")
        axes = ("layer", "pos")
        index = [(layer, pos) for layer in layers for pos in positions]
        if what == "resid_mid":
            variants = _resid_mid_variants(patcher, task, index, base, source)
        else:
            variants = [[Patch.at(f"blocks.{layer}.{LAYER_POS[what]}", source, p=[pos])] for layer, pos in index]
    elif what in LAYER_HEAD:
        axes = ("layer", "head")
        if what in ("head_k", "head_v"):  # grouped-query attention: one key/value per key-value head
            heads = range(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        index = [(layer, head) for layer in layers for head in heads]
        variants = [[Patch.at(f"blocks.{layer}.{LAYER_HEAD[what]}", source, h=[head])] for layer, head in index]
    elif what == "head_out_by_pos":
        axes = ("layer", "pos", "head")
        index = [(layer, pos, head) for layer in layers for pos in positions for head in heads]
        variants = [[Patch.at(f"blocks.{layer}.attn.hook_z", source, p=[pos], h=[head])] for layer, pos, head in index]
    else:
        raise ValueError(f"unknown sweep {what!r}: valid sweeps are {', '.join(SWEEPS)}")
    values = patcher.run(task, variants, base=base, desc=f"sweep {what}")
    runs = patcher.runs(task)
    result = Sweep(what, axes, index, values, runs.clean_metric, runs.corrupt_metric, direction)
    if len(axes) == 2:
        context.record_sweep(result.to_dict(title=result.title(task.name, model_label(model))))
    return result


def _resid_mid_variants(patcher, task: Task, index, base: str, source: str) -> list[list[Patch]]:
    # In TransformerBridge, hook_resid_mid is an alias of ln2's input: writing it
    # would change what the MLP reads but not the residual stream itself. The
    # residual after attention is resid_pre + attn_out, and with one patch per
    # variant resid_pre at that layer is the base run's, so writing
    # attn_out = source_mid - base_pre sets the true residual exactly.
    runs = patcher.runs(task)
    base_run, source_run = getattr(runs, base), getattr(runs, source)
    n_layers = patcher.model.cfg.n_layers
    base_run.ensure([f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)])
    source_run.ensure([f"blocks.{layer}.hook_resid_mid" for layer in range(n_layers)])
    writes = {
        layer: source_run[f"blocks.{layer}.hook_resid_mid"] - base_run[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)
    }
    return [[Patch.at(f"blocks.{layer}.hook_attn_out", writes[layer], p=[pos])] for layer, pos in index]


def report_view(name: str):
    """The function ``name`` of :mod:`circuitcheck.report.notebook`, which draws results in a notebook.

    Charts are the report's (one drawing for the page and the notebook), and the
    report is a layer above the engine and the claims: they never import it, so
    a result's ``_repr_html_`` and ``plot`` look its view up by name, when asked.
    """
    return getattr(importlib.import_module("circuitcheck.report.notebook"), name)


@dataclass
class Sweep:
    """Result of :meth:`Patcher.sweep` (and :meth:`Patcher.path_sweep`): per-example values ``[variants, batch]`` and their index.

    ``index`` holds one tuple per variant, e.g. ``(layer, head)``; a path sweep
    measures only the layers after its ``sender`` (whose output it patches), so
    its index starts there. ``normalized`` puts the corrupted run at 0 and the
    clean run at 1, whatever the direction.
    """

    what: str
    axes: tuple[str, ...]
    index: list[tuple[int, ...]]
    values: torch.Tensor
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor
    direction: str
    sender: str | None = None  # path sweeps: the component whose output reaches each receiver

    @property
    def axis_values(self) -> list[list[int]]:
        """The values each axis takes, in order: e.g. ``[[1], [0, 1, 2, 3]]`` for a path sweep from layer 0 of a 2-layer model."""
        return [sorted({i[a] for i in self.index}) for a in range(len(self.axes))]

    @property
    def mean(self) -> torch.Tensor:
        """Mean metric per variant, shaped by the sweep's axes (e.g. ``[layer, pos]``; indices not in the sweep are NaN)."""
        axis_values = self.axis_values
        where = [{value: k for k, value in enumerate(values)} for values in axis_values]
        means = self.values.mean(1)
        out = torch.full(tuple(len(values) for values in axis_values), float("nan"), dtype=means.dtype)
        if self.index:
            cells = torch.tensor([[where[a][v] for a, v in enumerate(index)] for index in self.index])
            out[tuple(cells.T)] = means
        return out

    @property
    def normalized(self) -> torch.Tensor:
        """``(mean - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        if clean == corrupt:
            raise CircuitCheckError("clean and corrupted runs score the same mean metric: a normalised sweep is undefined")
        return (self.mean - corrupt) / (clean - corrupt)

    def frame(self) -> pd.DataFrame:
        """Tidy: one row per patched index, with ``value`` (mean metric) and ``normalized``."""
        frame = pd.DataFrame(self.index, columns=list(self.axes))
        frame["value"] = self.values.mean(1).numpy()
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        frame["normalized"] = (frame["value"] - corrupt) / (clean - corrupt) if clean != corrupt else np.nan
        return frame

    def to_dict(self, title: str = "") -> dict:
        """JSON-safe, for the report: the mean and normalised matrices."""
        from ..tables import frame_to_json

        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        data = {
            "what": self.what,
            "axes": list(self.axes),
            "direction": self.direction,
            "title": title or self.title(),
            "matrix": frame_to_json(self.matrix()),
            "normalized": frame_to_json(self.matrix(normalized=True)) if clean != corrupt else None,
        }
        if self.sender is not None:
            data["sender"] = self.sender
        return data

    def title(self, task_name: str | None = None, model: str | None = None) -> str:
        """The heatmap's title: ``head_out patching (denoise)``, ``path patching from L0H1 into every later head's q (denoise)``."""
        if self.sender is not None:
            text = f"path patching from {self.sender} into every later head's {self.what.removeprefix('path_')} ({self.direction})"
        else:
            text = f"{self.what} patching ({self.direction})"
        if task_name:
            text += f" on {task_name}"
        return f"{text}, model {model}" if model else text

    def matrix(self, normalized: bool = False) -> pd.DataFrame:
        """The heatmap: first axis as rows, second as columns (2-axis sweeps), labelled by their values."""
        if len(self.axes) != 2:
            raise ValueError(f"sweep {self.what} has axes {self.axes}: use .frame() for more than two")
        values = (self.normalized if normalized else self.mean).numpy()
        rows, columns = self.axis_values
        frame = pd.DataFrame(values, index=rows, columns=columns)
        frame.index.name, frame.columns.name = self.axes
        return frame

    # Notebooks -----------------------------------------------------------------

    def __repr__(self) -> str:
        """One line: what was patched, over which indices, the two runs' means and the largest effect (not every index)."""
        axes = " x ".join(f"{name} {_span(values)}" for name, values in zip(self.axes, self.axis_values))
        what = f"{self.what} from {self.sender}" if self.sender is not None else self.what
        clean, corrupt = float(self.clean_metric.mean()), float(self.corrupt_metric.mean())
        text = (f"<Sweep {what} ({self.direction}) over {axes}: {len(self.index)} variants x {self.values.shape[1]} examples; "
                f"mean metric clean {clean:.3f}, corrupted {corrupt:.3f}")
        if clean != corrupt and len(self.index):
            normalized = (self.values.mean(1) - corrupt) / (clean - corrupt)
            largest = int((normalized - (0.0 if self.direction == "denoise" else 1.0)).abs().argmax())
            where = ", ".join(f"{name} {value}" for name, value in zip(self.axes, self.index[largest]))
            text += f"; largest change: normalised {float(normalized[largest]):.3f} at {where}"
        return text + ">"

    def _repr_html_(self) -> str:
        """The report's heatmap of this sweep (a table of its largest cells for sweeps of more than two axes)."""
        return report_view("sweep_html")(self)

    def plot(self, backend: str = "svg", *, normalized: bool | None = None, ax=None):
        """Draw the heatmap: ``backend="svg"`` gives the report's own SVG (shown by notebooks, ``.save(path)``),
        ``"matplotlib"`` draws on ``ax`` (a new figure without one) and returns the axes.

        ``normalized``: colour the normalised values (0 = corrupted, 1 = clean; the
        default when the two runs differ) or the mean metric (``False``).
        """
        return report_view("plot_sweep")(self, backend=backend, normalized=normalized, ax=ax)


def _span(values: list[int]) -> str:
    if not values:
        return "(none)"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
