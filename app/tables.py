"""Pure table builders: engine results in, pandas DataFrames out."""

import pandas as pd

from darwin_core.compat import CompatibilityReport
from darwin_core.mapper import MatchReport
from darwin_core.plan import MergePlan
from darwin_core.stats import format_p

_COMPAT_ROWS = (
    ("model type", "model_type"),
    ("architecture", "architecture"),
    ("layers", "num_layers"),
    ("hidden size", "hidden_size"),
    ("FFN size", "intermediate_size"),
    ("vocabulary", "vocab_size"),
    ("tied embeddings", "tie_word_embeddings"),
    ("parameters", "parameter_count"),
    ("dtypes", "dtypes"),
)


def compatibility_table(report: CompatibilityReport) -> pd.DataFrame:
    """One row per property, one column per parent (and the base when given)."""
    summaries = {"father": report.father, "mother": report.mother}
    if report.base is not None:
        summaries["base"] = report.base
    rows = []
    for label, key in _COMPAT_ROWS:
        row = {"property": label}
        for role, summary in summaries.items():
            value = getattr(summary, key)
            row[role] = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else ", ".join(value) if isinstance(value, tuple) else str(value)
        rows.append(row)
    return pd.DataFrame(rows)


def compatibility_summary(report: CompatibilityReport) -> str:
    """Markdown verdict under the table."""
    verdict = (
        "compatible: every tensor pairs up by name and shape" if report.compatible
        else "no same-family merge: the tensors do not all pair up by name and shape"
    )
    lines = [
        f"**{verdict}** (score {report.score:.2f}; same family: {'yes' if report.same_family else 'no'}; "
        f"{report.matched} tensors matched by name)"
    ]
    if not report.compatible:
        lines.append("- the Architecture Mapper below pairs them across layouts and says whether they can be bred")
    if report.shape_mismatched:
        name, a, b = report.shape_mismatched[0]
        lines.append(f"- {len(report.shape_mismatched)} tensors differ in shape, e.g. `{name}`: {tuple(a)} vs {tuple(b)}")
    if report.only_father:
        lines.append(f"- {len(report.only_father)} tensors only in the father, e.g. `{report.only_father[0]}`")
    if report.only_mother:
        lines.append(f"- {len(report.only_mother)} tensors only in the mother, e.g. `{report.only_mother[0]}`")
    lines += [f"- base: {problem}" for problem in report.base_problems[:3]]
    return "\n".join(lines)


def plan_counts_table(plan: MergePlan) -> pd.DataFrame:
    """Transplant and blend counts per component."""
    rows: dict[str, dict[str, int]] = {}
    for entry in plan.entries.values():
        row = rows.setdefault(entry.component, {"component": entry.component, "from father": 0, "from mother": 0, "blended": 0})
        key = {"transplant_a": "from father", "transplant_b": "from mother", "blend": "blended"}[entry.action.value]
        row[key] += 1
    counts = plan.counts()
    total = {"component": "all", "from father": counts["transplant_a"], "from mother": counts["transplant_b"], "blended": counts["blended"]}
    return pd.DataFrame([*sorted(rows.values(), key=lambda r: r["component"]), total])


def eval_table(evaluation: dict | None) -> pd.DataFrame:
    """Accuracy with 95% interval per suite and model, and the child's paired record against each parent."""
    columns = ["suite", "model", "accuracy", "95% interval", "n", "child wins", "child losses", "p-value"]
    if not evaluation:
        return pd.DataFrame(columns=columns)
    rows = []
    for suite in evaluation.get("suites", []):
        paired = {p["against"]: p for p in suite.get("paired", [])}
        for result in suite["results"]:
            match = paired.get(result["model"])
            rows.append({
                "suite": f"{suite['suite']} ({suite['split']})",
                "model": result["model"],
                "accuracy": round(result["accuracy"], 3),
                "95% interval": f"[{result['ci95'][0]:.3f}, {result['ci95'][1]:.3f}]",
                "n": result["n"],
                "child wins": match["wins"] if match else "",
                "child losses": match["losses"] if match else "",
                "p-value": format_p(match['p_value']) if match else "",
            })
    return pd.DataFrame(rows, columns=columns)


def eval_note(evaluation: dict | None) -> str:
    """A sentence on whether the child's difference from each parent is more than noise."""
    if not evaluation:
        return ""
    notes = []
    for suite in evaluation.get("suites", []):
        for paired in suite.get("paired", []):
            verdict = "a real difference" if paired["p_value"] < 0.05 else "within noise on this suite size"
            if paired["wins"] > paired["losses"]:
                direction = "better than"
            elif paired["wins"] < paired["losses"]:
                direction = "worse than"
            else:
                direction = "level with"
            notes.append(f"- `{suite['suite']}`: child {direction} {paired['against']} ({paired['wins']} wins, {paired['losses']} losses, p = {format_p(paired['p_value'])}): {verdict}.")
    return "\n".join(notes)


def health_table(health) -> pd.DataFrame:
    return pd.DataFrame([
        {
            "layer": row["layer"],
            "child": round(row["child"], 4),
            "father": round(row["father"], 4),
            "mother": round(row["mother"], 4),
            "flagged": row["direction"] or "",
        }
        for row in health.layers
    ])


HUB_COLUMNS = ["id", "architecture", "parameters", "downloads", "license", "gated"]


def hub_results_table(rows: list[list]) -> pd.DataFrame:
    """Hub search rows (as `HubModel.to_row()` gives them) as a table."""
    return pd.DataFrame(rows, columns=HUB_COLUMNS)


def match_table(report: MatchReport) -> pd.DataFrame:
    """Father tensors per component by outcome of the Architecture Mapper, with a total row."""
    rows = [
        {"component": component, "matched": counts.matched, "shape-mismatched": counts.shape_mismatched,
         "unmatched": counts.unmatched, "total": counts.total}
        for component, counts in report.components.items()
    ]
    rows.append({"component": "all", "matched": report.matched, "shape-mismatched": report.shape_mismatched,
                 "unmatched": report.unmatched, "total": report.total})
    return pd.DataFrame(rows, columns=["component", "matched", "shape-mismatched", "unmatched", "total"])


def match_summary(report: MatchReport) -> str:
    """Markdown under the match table: the verdict, how the parents pair, and samples of what did not."""
    scope = "FFN tensors" if report.crossbreed == "ffn" else "tensors"
    verdict = "breedable" if report.passed else "too few tensors pair to breed"
    hint = None
    if not report.passed and report.crossbreed is None:
        hint = "- try **FFN crossbreed** mode (above): the father keeps its attention and mixers and only the FFNs blend"
    lines = [
        f"**{verdict}**: {report.counted_matched} of {report.counted} father {scope} pair with the mother "
        f"({report.match_fraction:.0%}; min_match {report.min_match:.0%}; compatibility score {report.compatibility_score:.2f})",
        f"- families: {report.father_family} father, {report.mother_family} mother"
        + ("; FFN crossbreed: only the FFNs blend" if report.crossbreed == "ffn" else ""),
        f"- layers: {report.father_layers} in the father, {report.mother_layers} in the mother"
        + ("; father to mother layer: " + ", ".join(f"{a}→{b}" for a, b in enumerate(report.layer_map)) if report.layer_map else ""),
        f"- {report.renamed} partners under another name, {report.converted} converted between family conventions, "
        f"{report.split_or_joined} cut from or joined into fused tensors",
    ]
    if hint:
        lines.insert(1, hint)
    if report.vocabulary:
        vocabulary = report.vocabulary
        lines.append(
            f"- vocabulary: {vocabulary['shared']} shared tokens aligned by string, {vocabulary['father_only']} father-only "
            f"tokens and {vocabulary['padding_rows']} padding rows keep the father's rows, {vocabulary['partner_only']} "
            "mother-only tokens are left out"
        )
    for mismatch in report.shape_mismatches:
        lines.append(
            f"- shape differs: `{mismatch.father_name}` {tuple(mismatch.father_shape)} vs "
            f"`{mismatch.mother_name}` {tuple(mismatch.mother_shape)} (kept from the father)"
        )
    if report.unmatched_names:
        lines.append("- no partner (kept from the father), e.g. " + ", ".join(f"`{name}`" for name in report.unmatched_names))
    if report.mother_unused:
        lines.append("- mother tensors left unused, e.g. " + ", ".join(f"`{name}`" for name in report.mother_unused))
    lines += [f"- note: {note}" for note in report.notes]
    return "\n".join(lines)


def card_preview(card: str) -> str:
    """Format a model card for the preview: the YAML front matter as a code block, then the body.

    Rendered as it is, the front matter runs together into one paragraph of plain text.
    """
    if card.startswith("---\n"):
        end = card.find("\n---", 4)
        if end != -1:
            front, body = card[4:end], card[end + 4 :].lstrip("\n")
            return f"**Metadata** (YAML front matter)\n\n```yaml\n{front}\n```\n\n{body}"
    return card


ABLATION_COLUMNS = ["run", "mri_trust", "search fitness", "test mean"]


def ablation_table(rows: list[dict]) -> pd.DataFrame:
    """Build the trust ablation table: one row per run (trust fixed at 0, learned, fixed at 1)."""
    return pd.DataFrame(
        [
            {"run": row["run"], "mri_trust": round(row["mri_trust"], 3), "search fitness": round(row["search_fitness"], 3),
             "test mean": round(row["test_mean"], 3) if row["test_mean"] is not None else None}
            for row in rows
        ],
        columns=ABLATION_COLUMNS,
    )
