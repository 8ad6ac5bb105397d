"""The studio's pure figure and table builders, checked through `fig.data` and DataFrame contents."""

import pytest

from app import plots, tables
from darwin_core.breed import BreedSettings, breed, make_plan, prepare
from darwin_core.genome import Genome
from darwin_core.lineage import lineage
from darwin_core.mri import scan


@pytest.fixture(scope="module")
def scanned(llama_family):
    father, mother, base, mapping = prepare(llama_family["a"], llama_family["b"], llama_family["base"])
    report = scan(father, mother, base, mapping=mapping)
    return father, report, mapping


def test_static_heatmap_layers_by_component(scanned):
    _, report, _ = scanned
    figure = plots.static_heatmap(report, "a")
    heatmap = figure.data[0]
    assert heatmap.type == "heatmap"
    assert list(heatmap.y) == ["global", "L0", "L1"]
    assert set(heatmap.x) == {"embedding", "lm_head", "attention", "ffn", "norm"}
    assert all(0.0 <= value <= 1.0 for row in heatmap.z for value in row if value is not None)
    # Hover names the tensors behind a cell.
    attention_column = list(heatmap.x).index("attention")
    assert "model.layers.0.self_attn.q_proj.weight" in heatmap.text[1][attention_column]


def test_probe_heatmap_layers_by_family(scanned):
    _, report, _ = scanned
    heatmap = plots.probe_heatmap(report, "b").data[0]
    assert list(heatmap.x) == ["code", "knowledge", "language", "math", "reasoning"]
    assert len(heatmap.z) == 2


def test_ratio_map_follows_family_weights(scanned):
    _, report, _ = scanned
    even = plots.mri_ratio_heatmap(report).data[0].z
    skewed = plots.mri_ratio_heatmap(report, {"math": 3.0, "code": 0.0}).data[0].z
    assert even != skewed


def test_plan_heatmap_marks_transplants(scanned):
    father, report, mapping = scanned
    genome = Genome(global_ratio=0.0, attn_ratio=0.0, ffn_ratio=0.0, embed_ratio=0.0, mri_trust=0.0,
                    **{f"block_{i}_ratio": 0.0 for i in range(6)})
    plan = make_plan(father, genome, BreedSettings(), report, mapping=mapping)
    figure = plots.plan_heatmap(plan, report.num_layers)
    marks = [trace for trace in figure.data if trace.type == "scatter"]
    assert len(marks) == 1
    assert marks[0].name == "transplant from father"
    assert set(marks[0].text) == {"A"}


def test_plan_counts_table(scanned):
    father, report, mapping = scanned
    plan = make_plan(father, Genome(), BreedSettings(), report, mapping=mapping)
    table = tables.plan_counts_table(plan)
    total = table[table["component"] == "all"].iloc[0]
    assert total["blended"] == len(plan.entries)
    assert table["blended"].iloc[:-1].sum() == len(plan.entries)


def test_sibling_figure_has_cosine_with_base(scanned):
    _, report, _ = scanned
    names = [trace.name for trace in plots.sibling_figure(report).data]
    assert "cosine of task vectors" in names
    assert "probe score: mother - father" in names
    assert "father task-vector norm (relative)" in names


def test_sibling_figure_without_base(llama_family):
    father, mother, _, mapping = prepare(llama_family["a"], llama_family["b"])
    names = [trace.name for trace in plots.sibling_figure(scan(father, mother, None, mapping=mapping)).data]
    assert [name for name in names if "norm" in name] == ["mother - father norm (relative)"]
    assert "cosine of task vectors" not in names


def test_compatibility_table_and_summary(llama_family):
    from darwin_core.compat import check_parents

    father, mother, base, _ = prepare(llama_family["a"], llama_family["b"], llama_family["base"])
    report = check_parents(father, mother, base)
    table = tables.compatibility_table(report)
    assert list(table.columns) == ["property", "father", "mother", "base"]
    assert table[table["property"] == "layers"]["father"].iloc[0] == "2"
    assert tables.compatibility_summary(report).startswith("**compatible: every tensor pairs up")


def test_card_preview_front_matter(llama_family, tmp_path):
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=BreedSettings(run_health=False, eval_suites=()))
    card = (result.out / "README.md").read_text()
    preview = tables.card_preview(card)
    assert preview.startswith("**Metadata** (YAML front matter)\n\n```yaml\n")
    front = preview.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert "tags:" in front
    assert "- evolutionary-merge" in front
    assert "---" not in front
    assert card.split("\n---", 2)[-1].strip() in preview  # the body follows unchanged
    assert tables.card_preview("# no front matter") == "# no front matter"


def test_format_p_small_values():
    from darwin_core.stats import format_p

    assert format_p(3.64e-17) == "3.64e-17"
    assert format_p(0.0421) == "0.0421"
    assert format_p(1.0) == "1"


def test_eval_health_and_tree(llama_family, tmp_path):
    import json

    suite = tmp_path / "letters.jsonl"
    rows = [{"id": f"t{i}", "split": "test", "kind": "choice", "prompt": "ab=", "choices": ["a", "b"], "answer": i % 2} for i in range(6)]
    suite.write_text("\n".join(json.dumps(row) for row in rows))
    result = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=BreedSettings(eval_suites=(str(suite),)))

    table = tables.eval_table(result.record["eval"])
    assert list(table["model"])[-1] == "child"
    assert table.iloc[0]["child wins"] != ""
    assert "p =" in tables.eval_note(result.record["eval"])

    figure = plots.health_figure(result.health)
    assert {trace.name for trace in figure.data} >= {"father", "mother", "child", "tolerated band"}
    assert len(tables.health_table(result.health)) == 2

    tree = plots.lineage_figure(lineage(result.out))
    markers = [trace for trace in tree.data if trace.mode == "markers+text"][0]
    assert len(markers.x) == 3
    assert max(markers.x) == 1


def test_fitness_figure():
    history = [{"generation": 0, "best": 0.4, "mean": 0.3}, {"generation": 1, "best": 0.6, "mean": 0.45}]
    figure = plots.fitness_figure(history)
    assert [trace.name for trace in figure.data] == ["best", "mean"]
    assert list(figure.data[0].y) == [0.4, 0.6]
    assert list(figure.data[0].x) == [1, 2]  # generations counted from 1, as in the status line
    assert figure.layout.xaxis.dtick == 1


def test_hub_results_table():
    table = tables.hub_results_table([["org/model", "LlamaForCausalLM", "135M", 10, "apache-2.0", "no"]])
    assert list(table.columns) == ["id", "architecture", "parameters", "downloads", "license", "gated"]
    assert table.iloc[0]["id"] == "org/model"


def test_ablation_table_columns():
    rows = [{"run": "trust learned", "mri_trust": 0.41234, "search_fitness": 0.98765, "test_mean": None}]
    table = tables.ablation_table(rows)
    assert list(table.columns) == ["run", "mri_trust", "search fitness", "test mean"]
    assert table.iloc[0]["mri_trust"] == 0.412
    assert table.iloc[0]["search fitness"] == 0.988
    assert list(tables.ablation_table([]).columns) == list(table.columns)
