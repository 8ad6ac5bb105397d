"""The shipped quick-eval suites: well formed, with disjoint search and test items."""

import json

import pytest

from darwin_core.errors import SuiteError
from darwin_core.evaluate import EvalItem, list_suites, load_suite, normalize_answer
from darwin_core.paths import EVALS_DIR

SHIPPED = list_suites()


def test_expected_suites_ship():
    for name in ("tiny", "general", "arith"):
        assert name in SHIPPED, name


@pytest.mark.parametrize("name", SHIPPED)
def test_search_and_test_are_disjoint(name):
    search = load_suite(name, "search")
    test = load_suite(name, "test")
    assert len(search) >= 50 and len(test) >= 50
    key = lambda item: (item.prompt, item.choices)  # noqa: E731
    assert not {key(item) for item in search} & {key(item) for item in test}, f"{name}: an item is in both splits"


def test_evolution_scores_only_search_items(llama_family):
    from darwin_core.breed import BreedSettings
    from darwin_core.evolve import Evolution, EvolveSettings

    evolution = Evolution(llama_family["a"], llama_family["b"], settings=EvolveSettings(suites=(("tiny", 1.0),), max_items=20),
                          breed_settings=BreedSettings(run_health=False, eval_suites=()))
    context = evolution.context()
    items = [item for _, _, suite_items in context.suites for item in suite_items]
    assert len(items) == 20
    assert {item.split for item in items} == {"search"}


@pytest.mark.parametrize(
    "line, message",
    [
        ({"id": "a", "split": "train", "kind": "generate", "prompt": "x", "answer": "y"}, "split must be one of search, test"),
        ({"id": "a", "split": "test", "kind": "essay", "prompt": "x", "answer": "y"}, "kind must be one of generate, choice"),
        ({"id": "a", "split": "test", "kind": "choice", "prompt": "x", "choices": ["a"], "answer": 0}, "at least two strings"),
        ({"id": "a", "split": "test", "kind": "choice", "prompt": "x", "choices": ["a", "b"], "answer": 2}, "answer must be an index"),
        ({"id": "a", "split": "test", "kind": "generate", "prompt": "x"}, "missing field 'answer'"),
    ],
    ids=["split", "kind", "one-choice", "bad-index", "no-answer"],
)
def test_malformed_suite_lines(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(SuiteError, match=message):
        load_suite(str(path))


def test_unknown_suite_lists_shipped():
    with pytest.raises(SuiteError, match="unknown suite 'nope'.*tiny"):
        load_suite("nope")


def test_normalize_answer():
    assert normalize_answer(" 46.\nmore text") == "46"
    assert normalize_answer("cba") == "cba"


def test_item_defaults():
    item = EvalItem("x", "test", "s", "generate", "p", "a")
    assert item.max_new_tokens == 16
    assert not item.chat
    assert EVALS_DIR.is_dir()
