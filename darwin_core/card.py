"""Model card content for a child: YAML front matter and a Markdown body with the whole recipe.

The card is rendered through `huggingface_hub.ModelCard` by `hub.render_model_card`; this module
only assembles its data, so it stays free of network code.
"""

import re
import shlex
import warnings
from pathlib import Path

from .errors import DarwinWarning
from .genome import GENE_GROUPS, GENE_HELP
from .stats import format_p

TAGS = ["merge", "evolutionary-merge", "darwin"]


def read_front_matter_license(folder: Path) -> str | None:
    """The `license:` value of a model folder's README front matter, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    match = re.search(r"^license:\s*(\S+)", front, flags=re.MULTILINE)
    return match.group(1).strip("'\"") if match else None


def choose_license(licenses: dict[str, str | None]) -> str | None:
    """One license for the child: the parents' common license; warn and use `other` when they differ."""
    known = {ref: value for ref, value in licenses.items() if value}
    values = set(known.values())
    if len(values) == 1:
        return values.pop()
    if len(values) > 1:
        described = ", ".join(f"{ref}: {value}" for ref, value in known.items())
        warnings.warn(
            f"the parents have different licenses ({described}); the card says 'other'. Check that the terms allow merging.",
            DarwinWarning,
            stacklevel=2,
        )
        return "other"
    return None


def _format_interval(interval) -> str:
    low, high = interval
    return f"[{low:.3f}, {high:.3f}]"


def card_body(record: dict) -> str:
    """Markdown body: parents, genome, MRI summary, plan, health, eval, lineage and the reproduce command."""
    parents = record["parents"]
    lines = [
        f"# {record.get('name') or 'Darwin child'}",
        "",
        "Bred without training by Darwin Studio: weight-space recombination of two parents, guided by an "
        "MRI diagnostic of both and a 14-gene merge genome.",
        "",
        "## Parents",
        "",
        "| role | reference | generation | revision |",
        "| --- | --- | --- | --- |",
    ]
    for role in ("father", "mother", "base"):
        parent = parents.get(role)
        if parent:
            lines.append(f"| {role} | `{parent['ref']}` | {parent.get('generation', 0)} | {parent.get('revision') or '-'} |")
    lines += ["", f"Generation: {record['generation']}. Seed: {record['seed']}. Method: {record['plan']['method']}.", ""]

    lines += ["## Genome", "", "| group | gene | value | meaning |", "| --- | --- | --- | --- |"]
    for group, genes in GENE_GROUPS.items():
        for gene in genes:
            lines.append(f"| {group} | `{gene}` | {record['genome'][gene]:.4f} | {GENE_HELP[gene]} |")
    lines.append("")

    mri = record.get("mri")
    if mri:
        components = ", ".join(f"{name} {value:.3f}" for name, value in mri["by_component"].items())
        lines += ["## MRI summary", "", f"Mean r_MRI {mri['mean_ratio']:.3f} ({components})."]
        if mri.get("mean_task_cosine") is not None:
            lines.append(f"Mean cosine between the parents' task vectors: {mri['mean_task_cosine']:.3f}.")
        lines.append("")

    plan = record["plan"]
    lines += [
        "## Merge plan",
        "",
        f"{plan['transplant_a']} tensors copied from the father, {plan['transplant_b']} from the mother, "
        f"{plan['blended']} blended; mean mother share {plan['mean_ratio']:.3f}.",
        "",
    ]

    health = record.get("health")
    if health:
        lines += ["## Health check", "", f"Verdict: **{health['verdict']}**."]
        lines += [f"- {reason}" for reason in health.get("reasons", [])]
        lines.append("")

    evaluation = record.get("eval") or {}
    for suite in evaluation.get("suites", []):
        lines += [
            f"## Quick eval: `{suite['suite']}` ({suite['split']} split)",
            "",
            "| model | accuracy | 95% interval | n |",
            "| --- | --- | --- | --- |",
        ]
        for result in suite["results"]:
            lines.append(f"| {result['model']} | {result['accuracy']:.3f} | {_format_interval(result['ci95'])} | {result['n']} |")
        lines += ["", "| child vs | wins | losses | p-value |", "| --- | --- | --- | --- |"]
        for paired in suite.get("paired", []):
            lines.append(f"| {paired['against']} | {paired['wins']} | {paired['losses']} | {format_p(paired['p_value'])} |")
        lines += ["", "Small suites are noisy: read the intervals and p-values before ranking models.", ""]

    lines += ["## Lineage", ""]
    for role in ("father", "mother"):
        parent = parents.get(role)
        if parent:
            lines.append(f"- {role}: `{parent['ref']}` (generation {parent.get('generation', 0)})")
    lines += ["", "## Reproduce", "", "```bash", reproduce_command(record), "```", ""]
    return "\n".join(lines)


def pinned_ref(parent: dict) -> str:
    """Return a parent's reference, with a Hub parent pinned to the commit it was bred from."""
    if parent.get("kind") == "hub" and parent.get("revision"):
        return f"{parent['ref'].split('@')[0]}@{parent['revision']}"
    return parent["ref"]


def reproduce_command(record: dict) -> str:
    """The `darwin breed` command that rebuilds this child from its parents and `darwin.json`."""
    parents, settings = record["parents"], record["settings"]
    parts = ["darwin", "breed", "--father", pinned_ref(parents["father"]), "--mother", pinned_ref(parents["mother"])]
    if parents.get("base"):
        parts += ["--base", pinned_ref(parents["base"])]
    name = record.get("name") or "child"
    parts += ["--genome", f"{name}/darwin.json", "--seed", str(record["seed"])]
    plan = settings["plan"]
    if plan["method"] != "darwin":
        parts += ["--method", plan["method"], "--ratio", str(plan["ratio"]), "--density", str(plan["density"])]
        if plan["normalize"]:
            parts.append("--normalize")
    if (plan["transplant_low"], plan["transplant_high"]) != (0.15, 0.85):
        parts += ["--transplant-low", str(plan["transplant_low"]), "--transplant-high", str(plan["transplant_high"])]
    for family, weight in sorted((settings["mri"].get("family_weights") or {}).items()):
        parts += ["--family-weight", f"{family}={weight}"]
    mapper = settings.get("mapper") or {}
    if mapper.get("crossbreed"):
        parts += ["--crossbreed", mapper["crossbreed"]]
    if mapper.get("min_match", 0.8) != 0.8:
        parts += ["--min-match", str(mapper["min_match"])]
    parts += ["--out", f"{name}-rebuilt"]
    return shlex.join(parts)


def card_metadata(record: dict, license_name: str | None) -> dict:
    """Front matter fields: base models, tags, license, pipeline tag and library."""
    base_models = []
    for role in ("father", "mother"):
        parent = record["parents"].get(role)
        hub_id = parent and (parent.get("hub_id") or (parent["ref"].split("@")[0] if parent.get("kind") == "hub" else None))
        if hub_id:
            base_models.append(hub_id)
    metadata = {
        "base_model": base_models or None,
        "tags": TAGS,
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
    }
    if license_name:
        metadata["license"] = license_name
    return metadata
