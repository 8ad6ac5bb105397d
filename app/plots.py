"""Pure figure builders: engine results in, plotly figures out. No Gradio, no I/O."""

import math
from collections import defaultdict

import plotly.graph_objects as go

from darwin_core.health import HealthReport
from darwin_core.inventory import COMPONENTS
from darwin_core.lineage import LineageNode
from darwin_core.mri import MriReport
from darwin_core.plan import Action, MergePlan

GLOBAL_ROW = "global"
_COLOR_SCALE = "Viridis"
_RATIO_SCALE = [[0.0, "#2b6cb0"], [0.5, "#f7f7f7"], [1.0, "#c53030"]]  # father blue, mother red


def _row_label(layer: int | None) -> str:
    return GLOBAL_ROW if layer is None else f"L{layer}"


def _grid(cells: dict[tuple[int | None, str], list[tuple[str, float]]], num_layers: int):
    """Average per (layer, component) cell; hover lists the tensors behind each cell.

    Returns (rows, columns, z, hover): rows top to bottom are the global row then layers 0..L-1.
    """
    columns = [c for c in COMPONENTS if any(component == c for _, component in cells)]
    layers: list[int | None] = [None] if any(layer is None for layer, _ in cells) else []
    layers += list(range(num_layers))
    z, hover = [], []
    for layer in layers:
        z_row, hover_row = [], []
        for column in columns:
            entries = cells.get((layer, column), [])
            if entries:
                z_row.append(sum(value for _, value in entries) / len(entries))
                hover_row.append("<br>".join(f"{name}: {value:.4f}" for name, value in entries[:12]) + ("<br>..." if len(entries) > 12 else ""))
            else:
                z_row.append(None)
                hover_row.append("no tensor")
        z.append(z_row)
        hover.append(hover_row)
    return [_row_label(layer) for layer in layers], columns, z, hover


def _heatmap(rows, columns, z, hover, title: str, colorscale=_COLOR_SCALE, zmin=None, zmax=None, colorbar: str = "") -> go.Figure:
    figure = go.Figure(
        go.Heatmap(
            z=z, x=columns, y=rows, text=hover, hovertemplate="%{y} %{x}<br>%{text}<extra></extra>",
            colorscale=colorscale, zmin=zmin, zmax=zmax, colorbar={"title": colorbar},
        )
    )
    figure.update_layout(title=title, yaxis={"autorange": "reversed"}, margin={"l": 60, "r": 20, "t": 50, "b": 40}, height=420)
    return figure


def static_heatmap(report: MriReport, side: str) -> go.Figure:
    """Layers x component static MRI score of one parent (`side` is "a" for father, "b" for mother)."""
    scores = report.static_scores()
    index = 0 if side == "a" else 1
    cells: dict = defaultdict(list)
    for name, entry in report.tensors.items():
        cells[(entry["layer"], entry["component"])].append((name, scores[name][index]))
    rows, columns, z, hover = _grid(cells, report.num_layers)
    who = report.father if side == "a" else report.mother
    return _heatmap(rows, columns, z, hover, f"Static score: {who}", zmin=0, zmax=1, colorbar="score")


def probe_heatmap(report: MriReport, side: str) -> go.Figure:
    """Layers x probe family block influence of one parent."""
    profile = report.probe_a if side == "a" else report.probe_b
    families = list(profile.influence)
    z = [[profile.influence[family][layer] for family in families] for layer in range(report.num_layers)]
    hover = [[f"block influence {value:.4f}" for value in row] for row in z]
    rows = [f"L{layer}" for layer in range(report.num_layers)]
    who = report.father if side == "a" else report.mother
    return _heatmap(rows, families, z, hover, f"Probe block influence: {who}", colorbar="1 - cos")


def mri_ratio_heatmap(report: MriReport, family_weights: dict[str, float] | None = None) -> go.Figure:
    """Layers x component mean r_MRI: blue leans to the father, red to the mother."""
    ratios = report.ratios(family_weights)
    cells: dict = defaultdict(list)
    for name, entry in report.tensors.items():
        cells[(entry["layer"], entry["component"])].append((name, ratios[name]))
    rows, columns, z, hover = _grid(cells, report.num_layers)
    return _heatmap(rows, columns, z, hover, "r_MRI (mother's share by diagnosis)", _RATIO_SCALE, 0, 1, "r_MRI")


def plan_heatmap(plan: MergePlan, num_layers: int, title: str = "Merge plan: r_final per layer and component") -> go.Figure:
    """Layers x component mean r_final, with transplanted cells marked A (father) or B (mother)."""
    cells: dict = defaultdict(list)
    actions: dict = defaultdict(set)
    for entry in plan.entries.values():
        cells[(entry.layer, entry.component)].append((entry.name, entry.r_final))
        actions[(entry.layer, entry.component)].add(entry.action)
    rows, columns, z, hover = _grid(cells, num_layers)
    for (layer, component), kinds in actions.items():
        if len(kinds) == 1 and component in columns:
            label = {Action.TRANSPLANT_A: " (all from father)", Action.TRANSPLANT_B: " (all from mother)"}.get(next(iter(kinds)), "")
            row = rows.index(_row_label(layer))
            hover[row][columns.index(component)] += label
    figure = _heatmap(rows, columns, z, hover, title, _RATIO_SCALE, 0, 1, "r_final")

    marks = {"A": ([], []), "B": ([], [])}
    for (layer, component), kinds in actions.items():
        if kinds == {Action.TRANSPLANT_A}:
            marks["A"][0].append(component)
            marks["A"][1].append(_row_label(layer))
        elif kinds == {Action.TRANSPLANT_B}:
            marks["B"][0].append(component)
            marks["B"][1].append(_row_label(layer))
    for label, (xs, ys) in marks.items():
        if xs:
            figure.add_trace(go.Scatter(
                x=xs, y=ys, mode="text", text=[label] * len(xs), textfont={"size": 14, "color": "black"},
                name=f"transplant from {'father' if label == 'A' else 'mother'}", hoverinfo="skip",
            ))
    return figure


def sibling_figure(report: MriReport) -> go.Figure:
    """What tells siblings apart, per layer: task-vector norms, their cosine and the probe difference."""
    norms_a: dict[int, list[float]] = defaultdict(list)
    norms_b: dict[int, list[float]] = defaultdict(list)
    for entry in report.tensors.values():
        if entry["layer"] is not None:
            norms_a[entry["layer"]].append(entry.get("task_norm_a", 0.0))
            norms_b[entry["layer"]].append(entry.get("task_norm_b", 0.0))
    layers = list(range(report.num_layers))
    probe_a, probe_b = report.probe_scores()
    figure = go.Figure()
    if report.base is None:
        # Without a base both task vectors are the difference of the two parents, so their norms
        # are equal and one line shows them.
        figure.add_trace(go.Scatter(x=layers, y=[sum(norms_b[l]) / max(len(norms_b[l]), 1) for l in layers],
                                    name="mother - father norm (relative)"))
    else:
        figure.add_trace(go.Scatter(x=layers, y=[sum(norms_a[l]) / max(len(norms_a[l]), 1) for l in layers], name="father task-vector norm (relative)"))
        figure.add_trace(go.Scatter(x=layers, y=[sum(norms_b[l]) / max(len(norms_b[l]), 1) for l in layers], name="mother task-vector norm (relative)"))
    if any(value is not None for value in report.task_cosine):
        figure.add_trace(go.Scatter(x=layers, y=report.task_cosine, name="cosine of task vectors", yaxis="y2"))
    figure.add_trace(go.Bar(x=layers, y=[b - a for a, b in zip(probe_a, probe_b)], name="probe score: mother - father", opacity=0.4))
    figure.update_layout(
        title="Sibling differences per layer",
        xaxis={"title": "layer"},
        yaxis={"title": "relative norm / probe difference"},
        yaxis2={"title": "cosine", "overlaying": "y", "side": "right", "range": [-1, 1]},
        height=380,
        margin={"l": 60, "r": 60, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def health_figure(health: HealthReport) -> go.Figure:
    """Per-layer block influence of child, father and mother, with the tolerated band and flags."""
    layers = [row["layer"] for row in health.layers]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=layers, y=[row["high"] for row in health.layers], mode="lines", line={"width": 0}, showlegend=False, hoverinfo="skip"))
    figure.add_trace(go.Scatter(
        x=layers, y=[row["low"] for row in health.layers], mode="lines", fill="tonexty", line={"width": 0},
        name="tolerated band", fillcolor="rgba(120,120,120,0.2)", hoverinfo="skip",
    ))
    for key, color in (("father", "#2b6cb0"), ("mother", "#c53030"), ("child", "#2f855a")):
        figure.add_trace(go.Scatter(x=layers, y=[row[key] for row in health.layers], name=key, line={"color": color}))
    flagged = [row for row in health.layers if row["flagged"]]
    if flagged:
        figure.add_trace(go.Scatter(
            x=[row["layer"] for row in flagged], y=[row["child"] for row in flagged], mode="markers",
            marker={"size": 12, "symbol": "x", "color": "#d69e2e"}, name="flagged layer",
        ))
    figure.update_layout(
        title=f"Health check: {health.verdict}", xaxis={"title": "layer"}, yaxis={"title": "block influence"},
        height=360, margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.25},
    )
    return figure


def fitness_figure(history: list[dict]) -> go.Figure:
    """Best and mean fitness per generation of an evolution run."""
    generations = [row["generation"] + 1 for row in history]  # counted from 1, as the status line counts them
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=generations, y=[row["best"] for row in history], name="best", mode="lines+markers"))
    figure.add_trace(go.Scatter(x=generations, y=[row["mean"] for row in history], name="mean", mode="lines+markers"))
    step = max(1, math.ceil(len(generations) / 10))  # whole generations only, at most about ten ticks
    figure.update_layout(
        title="Fitness per generation (search split)", yaxis={"title": "fitness"},
        xaxis={"title": "generation", "tick0": 1, "dtick": step, "tickformat": "d"},
        height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )
    return figure


def lineage_figure(nodes: list[LineageNode]) -> go.Figure:
    """Family tree: one column per generation, edges from each child to its parents."""
    by_generation: dict[int, list[LineageNode]] = defaultdict(list)
    for node in nodes:
        by_generation[node.generation].append(node)
    position = {}
    for generation, members in by_generation.items():
        for index, node in enumerate(sorted(members, key=lambda n: n.label)):
            position[node.id] = (generation, index - (len(members) - 1) / 2)

    figure = go.Figure()
    colors = {"father": "#2b6cb0", "mother": "#c53030", "base": "#718096"}
    for node in nodes:
        for role, parent_id in node.parents.items():
            (x0, y0), (x1, y1) = position[node.id], position[parent_id]
            figure.add_trace(go.Scatter(
                x=[x0, x1], y=[y0, y1], mode="lines", line={"color": colors.get(role, "#718096"), "width": 2},
                name=role, showlegend=False, hoverinfo="skip",
            ))
    hover = [
        f"{n.label}<br>generation {n.generation}" + (f"<br>health {n.health}" if n.health else "") + (f"<br>score {n.score:.3f}" if n.score is not None else "")
        for n in nodes
    ]
    figure.add_trace(go.Scatter(
        x=[position[n.id][0] for n in nodes], y=[position[n.id][1] for n in nodes], mode="markers+text",
        text=[n.label for n in nodes], textposition="top center", hovertext=hover, hoverinfo="text",
        marker={"size": 18, "color": [n.generation for n in nodes], "colorscale": "Tealgrn"}, name="models",
    ))
    figure.update_layout(
        title="Family tree", xaxis={"title": "generation", "dtick": 1}, yaxis={"visible": False},
        height=360, showlegend=False, margin={"l": 40, "r": 20, "t": 50, "b": 40},
    )
    return figure
