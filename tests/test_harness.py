"""lm-evaluation-harness tasks as suites: a local YAML task over a JSON file, fully offline."""

import json

import pytest

from darwin_core.breed import BreedSettings
from darwin_core.cli import main
from darwin_core.evolve import Evolution, EvolveSettings
from darwin_core.harness import HarnessSuite
from darwin_core.modeling import load_model

pytest.importorskip("lm_eval")

TASK_YAML = """task: letters_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm-eval-task")
    rows = [{"question": f"{a}{b}=", "choices": [a, b], "label": index % 2} for index, (a, b) in enumerate(zip("abcdefghij", "klmnopqrst"))]
    data = folder / "letters.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (folder / "letters_local.yaml").write_text(TASK_YAML.format(data=data))
    return folder


@pytest.fixture(autouse=True)
def offline_datasets(monkeypatch, task_folder):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("DARWIN_LM_EVAL_INCLUDE", str(task_folder))


def test_harness_splits_are_disjoint():
    search = HarnessSuite("lm_eval:letters_local", "search")
    test = HarnessSuite("lm_eval:letters_local", "test")
    assert search.indices == [0, 2, 4, 6, 8]
    assert test.indices == [1, 3, 5, 7, 9]


def test_harness_scores_in_memory_model(llama_family):
    model, tokenizer = load_model(llama_family["a"])
    score = HarnessSuite("lm_eval:letters_local", "test").score(model, tokenizer)
    assert score.n == 5
    assert score.item_ids == [f"letters_local-{i}" for i in (1, 3, 5, 7, 9)]
    assert 0.0 <= score.accuracy <= 1.0


def test_darwin_eval_with_harness_task(llama_family, capsys):
    code = main(["eval", str(llama_family["a"]), str(llama_family["b"]), "--suite", "lm_eval:letters_local", "--split", "test", "--json", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["suite"] == "lm_eval:letters_local"
    assert [row["n"] for row in report["results"]] == [5, 5]
    assert len(report["paired"]) == 1


def test_harness_task_as_fitness(llama_family):
    settings = EvolveSettings(population=4, generations=1, suites=(("lm_eval:letters_local", 1.0),))
    result = Evolution(llama_family["a"], llama_family["b"], settings=settings, breed_settings=BreedSettings(run_health=False, eval_suites=())).run()
    assert all(0.0 <= c.fitness <= 1.0 for c in result.candidates)
    assert all("lm_eval:letters_local" in c.scores for c in result.candidates)


def test_unknown_harness_task():
    from darwin_core.errors import SuiteError

    with pytest.raises(SuiteError, match="unknown lm-evaluation-harness task 'no_such_task'"):
        HarnessSuite("lm_eval:no_such_task", "test")
