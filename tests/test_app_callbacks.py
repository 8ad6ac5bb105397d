"""Studio callbacks called directly, without a browser: what they keep in the session and refuse."""

import json

import gradio as gr
import pytest

import app.state as state
from app import callbacks, tables
from darwin_core.genome import GENE_NAMES, Genome
from darwin_core.probes import PROBE_FAMILIES


@pytest.fixture
def sessions_root(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "SESSIONS_ROOT", tmp_path / "sessions")
    return tmp_path / "sessions"


def slider_values() -> list[float]:
    genome = Genome()
    return [1.0] * len(PROBE_FAMILIES) + [getattr(genome, gene) for gene in GENE_NAMES]


def test_edited_parents_need_check(llama_family, sessions_root):
    father, mother, base = str(llama_family["a"]), str(llama_family["b"]), str(llama_family["base"])
    session, _, summary, _ = callbacks.check_parents(father, mother, "", "none", 0.8, None)
    assert session.breedable
    assert summary.startswith("**compatible")

    # The same fields again change nothing.
    unchanged = callbacks.parents_edited(session, father, mother, "", "none", 0.8)
    assert session.parents is not None
    assert list(unchanged[1:]) == [gr.skip()] * 3

    # Another mother on the page: the checked pair is forgotten, and breeding requires a new check.
    _, table, note, _ = callbacks.parents_edited(session, father, base, "", "none", 0.8)
    assert session.parents is None
    assert table is None
    assert note.startswith("**Not checked**")
    with pytest.raises(gr.Error, match="Check the parents on the Parents tab first"):
        callbacks.breed_child(session, [], 0, "linear", 0.5, 1.0, *slider_values())

    # A changed crossbreed setting counts as well.
    session, *_ = callbacks.check_parents(father, base, "", "none", 0.8, session)
    callbacks.parents_edited(session, father, base, "", "none", 0.5)
    assert session.parents is None
    session.close()


def test_eval_note_level_with():
    evaluation = {"suites": [{"suite": "upper", "paired": [{"against": "tiny-arith", "wins": 0, "losses": 0, "p_value": 1.0}]}]}
    assert tables.eval_note(evaluation) == "- `upper`: child level with tiny-arith (0 wins, 0 losses, p = 1): within noise on this suite size."


def test_genome_import_error_file_name(tmp_path):
    upload = tmp_path / "gradio-upload-1234" / "bad-genome.json"
    upload.parent.mkdir()
    values = Genome().to_dict()
    values["global_ratio"] = 2.5
    upload.write_text(json.dumps(values))
    with pytest.raises(gr.Error) as raised:
        callbacks.import_genome(str(upload))
    assert raised.value.message.startswith("bad-genome.json: gene global_ratio must be in [0, 1], got 2.5")
    assert "gradio-upload-1234" not in raised.value.message
