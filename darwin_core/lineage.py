"""Family trees from `darwin.json` records: every child names its parents, so the tree of a child
is found by following those references back until a model that Darwin Studio did not breed."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .outputs import RECORD_NAME


@dataclass
class LineageNode:
    """One model in a family tree; `parents` holds the ids of its father and mother (and base)."""

    id: str
    label: str
    generation: int
    folder: str | None = None
    parents: dict[str, str] = field(default_factory=dict)
    health: str | None = None
    score: float | None = None


def _read_record(folder: Path) -> dict | None:
    path = folder / RECORD_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _mean_child_score(record: dict) -> float | None:
    suites = (record.get("eval") or {}).get("suites") or []
    scores = [row["accuracy"] for suite in suites for row in suite["results"] if row["model"] == "child"]
    return sum(scores) / len(scores) if scores else None


def lineage(folder: str | Path, max_depth: int = 32) -> list[LineageNode]:
    """Walk a child's ancestry; returns the nodes from the child back to its oldest ancestors.

    A parent reference that is a folder holding its own `darwin.json` is followed; any other
    reference (an embedded model, a Hub id, a plain checkpoint) ends its branch.
    """
    nodes: dict[str, LineageNode] = {}

    def visit(reference: str, folder: Path | None, depth: int) -> str:
        record = _read_record(folder) if folder is not None and folder.is_dir() else None
        node_id = str(folder.resolve()) if record is not None else reference
        if node_id in nodes:
            return node_id
        if record is None:
            nodes[node_id] = LineageNode(id=node_id, label=reference, generation=0, folder=str(folder) if folder else None)
            return node_id
        node = LineageNode(
            id=node_id,
            label=record.get("name") or folder.name,
            generation=int(record.get("generation", 1)),
            folder=str(folder),
            health=(record.get("health") or {}).get("verdict"),
            score=_mean_child_score(record),
        )
        nodes[node_id] = node
        if depth >= max_depth:
            return node_id
        for role, parent in (record.get("parents") or {}).items():
            if not parent:
                continue
            ref = parent["ref"]
            candidate = Path(parent.get("path") or ref).expanduser()
            node.parents[role] = visit(ref, candidate if candidate.is_dir() else None, depth + 1)
        return node_id

    start = Path(folder)
    visit(str(start), start, 0)
    return list(nodes.values())


def format_tree(nodes: list[LineageNode]) -> str:
    """Render a lineage as indented text, the child first."""
    by_id = {node.id: node for node in nodes}
    lines: list[str] = []

    def render(node_id: str, prefix: str, role: str | None) -> None:
        node = by_id[node_id]
        details = [f"generation {node.generation}"]
        if node.health:
            details.append(f"health {node.health}")
        if node.score is not None:
            details.append(f"score {node.score:.3f}")
        lines.append(f"{prefix}{role + ': ' if role else ''}{node.label} ({', '.join(details)})")
        for parent_role, parent_id in node.parents.items():
            render(parent_id, prefix + "    ", parent_role)

    if nodes:
        render(nodes[0].id, "", None)
    return "\n".join(lines)
