"""Patching heatmaps: normalised maps on one fixed [-1, 1] scale with the raw range beside the legend; raw maps symmetric around 0.

Issue 16, problem 7: with a colour scale per sweep, ±0.02 of noise looked as
saturated as an effect of 1.0.
"""

from __future__ import annotations

import re

import pandas as pd

from circuitcheck.report import heatmaps
from circuitcheck.tables import frame_to_json

WHITE = (0xF7, 0xF7, 0xF7)  # the diverging scale's middle
DARK_RED = (0x67, 0x00, 0x1F)  # ColorBrewer RdBu's positive end
CELL = re.compile(r'<rect class="cell"[^>]*fill="#([0-9a-f]{6})"><title>layer (\d+), pos (\d+): ([a-z ]+) ')


def sweep_of(normalized: list[list[float]] | None, mean: list[list[float]]) -> dict:
    """A sweep as the report reads it (what ``Sweep.to_dict`` writes): mean metric, optionally its normalised values."""
    frames = {"matrix": pd.DataFrame(mean), "normalized": pd.DataFrame(normalized) if normalized is not None else None}
    for frame in frames.values():
        if frame is not None:
            frame.index.name, frame.columns.name = "layer", "pos"
    return {"what": "resid_pre", "axes": ["layer", "pos"], "direction": "denoise", "title": "resid_pre patching (denoise)",
            "matrix": frame_to_json(frames["matrix"]),
            "normalized": frame_to_json(frames["normalized"]) if frames["normalized"] is not None else None}


def drawn(*sweeps: dict) -> list[dict]:
    return heatmaps.patching([{"nodeid": "t", "sweeps": list(sweeps)}])


def colours(figure: dict) -> dict[tuple[int, int], tuple[int, int, int]]:
    """(row, column) -> the cell's fill as RGB."""
    out = {}
    for fill, row, column, _ in CELL.findall(str(figure["svg"])):
        out[int(row), int(column)] = (int(fill[0:2], 16), int(fill[2:4], 16), int(fill[4:6], 16))
    return out


def distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> int:
    return max(abs(p - q) for p, q in zip(a, b))


def test_noise_of_a_few_hundredths_stays_pale_on_a_normalised_map():
    noise = [[0.02, -0.02, 0.01], [-0.01, 0.0, 0.02]]
    cells = colours(drawn(sweep_of(noise, [[v * 5 for v in row] for row in noise]))[0])
    assert len(cells) == 6
    # a per-sweep scale stretches 0.02 to the darkest red; on [-1, 1] it is 1% of the way from white
    assert all(distance(colour, WHITE) <= 8 for colour in cells.values()), cells


def test_an_effect_of_one_is_saturated_and_coloured_the_same_in_every_sweep():
    strong = sweep_of([[1.0, 0.0], [0.5, 0.02]], [[3.0, 0.0], [1.5, 0.06]])
    weak = sweep_of([[0.02, 0.5], [0.0, -0.02]], [[0.06, 1.5], [0.0, -0.06]])
    big = sweep_of([[2.0, 0.5], [0.0, 0.0]], [[6.0, 1.5], [0.0, 0.0]])  # recovery above 1: a scale up to 2 would pale 1.0
    first, second, third = (colours(figure) for figure in drawn(strong, weak, big))
    assert first[0, 0] == DARK_RED and third[0, 0] == DARK_RED  # 1.0 and 2.0: the scale's end
    assert first[1, 0] == second[0, 1] == third[0, 1]  # 0.5 is one colour whatever else the sweep holds
    assert first[1, 1] == second[0, 0] and distance(second[0, 0], WHITE) <= 8


def test_the_legend_of_a_normalised_map_runs_from_minus_one_to_one_and_states_the_raw_range():
    figure = drawn(sweep_of([[0.02, -0.013], [0.0, 1.25]], [[0.4, 0.1], [0.2, 2.9]]))[0]
    legend = str(figure["legend"])
    ticks = re.findall(r'class="tick">([^<]+)</text>', legend)
    assert ticks == ["-1.00", "0.00", "1.00"]
    assert "values -0.013 to 1.250 (beyond the scale: saturated)" in legend
    assert "mean metric 0.100 to 2.900" in legend


def test_a_raw_map_keeps_a_data_driven_scale_symmetric_around_zero():
    figure = drawn(sweep_of(None, [[0.5, -3.0], [0.0, 1.0]]))[0]
    legend = str(figure["legend"])
    assert re.findall(r'class="tick">([^<]+)</text>', legend) == ["-3.00", "0.00", "3.00"]
    assert "values -3.000 to 1.000" in legend and "saturated" not in legend
    cells = colours(figure)
    assert cells[1, 0] == WHITE  # 0 is white on a raw map too
    assert cells[0, 1][2] > cells[0, 1][0]  # the most negative value: the blue end
