"""Architecture Mapper vocabularies: rows aligned by token string, padding rows, tied embeddings."""

import json

import pytest
import torch
from torch.testing import assert_close

from darwin_core.breed import BreedSettings, breed, prepare
from darwin_core.mapper import match_parents
from darwin_core.parents import resolve_parent
from darwin_core.plan import PlanSettings
from factories import llama_config, save_model
from mapper_factories import load_weights, logits, rename_checkpoint, save_family_model

MOTHER_ONLY = BreedSettings(plan=PlanSettings(method="linear", ratio=1.0), run_health=False, eval_suites=())
HALF = BreedSettings(plan=PlanSettings(method="linear", ratio=0.5), run_health=False, eval_suites=())
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz .")  # with SPECIAL: 32 tokens
EXTRA = ["<tool>", "<think>"]
EMBEDDING_NAMES = ("model.embed_tokens.weight", "lm_head.weight")


def word_tokenizer(folder, tokens: list[str]):
    """Save a character-level fast tokenizer whose ids follow the order of `tokens`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({token: index for index, token in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return folder


def llama_with_tokens(tmp_path, name: str, tokens: list[str], seed: int, rows: int | None = None, **overrides):
    tokenizer = word_tokenizer(tmp_path / f"{name}-tokenizer", tokens)
    return save_model(tmp_path / name, llama_config(rows or len(tokens), **overrides), seed, tokenizer_from=tokenizer)


def ids(folder) -> dict[str, int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder)).get_vocab()


@pytest.fixture
def vocab_pair(tmp_path):
    """A father with 32 tokens and a mother with 34: two special tokens inserted, so most ids move."""
    father = llama_with_tokens(tmp_path, "father", SPECIAL + LETTERS, seed=1)
    mother = llama_with_tokens(tmp_path, "mother", SPECIAL + LETTERS[:3] + EXTRA[:1] + LETTERS[3:20] + EXTRA[1:] + LETTERS[20:], seed=2)
    return father, mother


def test_rows_align_by_token_string(vocab_pair, tmp_path):
    father, mother = vocab_pair
    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    child, mother_weights = load_weights(result.out), load_weights(mother)
    father_ids, mother_ids = ids(father), ids(mother)
    for name in EMBEDDING_NAMES:
        assert child[name].shape[0] == 32
        for token, row in father_ids.items():
            assert torch.equal(child[name][row], mother_weights[name][mother_ids[token]]), (name, token)
    vocabulary = result.compatibility.vocabulary
    assert (vocabulary["shared"], vocabulary["father_only"], vocabulary["partner_only"]) == (32, 0, 2)
    assert vocabulary["moved"] == 32 - 7  # every token after the first insertion moved
    assert json.loads((result.out / "config.json").read_text())["vocab_size"] == 32


def test_blend_uses_aligned_rows(vocab_pair, tmp_path):
    father, mother = vocab_pair
    child = load_weights(breed(father, mother, tmp_path / "child", settings=HALF).out)
    father_weights, mother_weights = load_weights(father), load_weights(mother)
    mother_ids = ids(mother)
    for token, row in ids(father).items():
        expected = 0.5 * (father_weights["model.embed_tokens.weight"][row] + mother_weights["model.embed_tokens.weight"][mother_ids[token]])
        assert_close(child["model.embed_tokens.weight"][row], expected)


def test_father_only_tokens_keep_father_rows(vocab_pair, tmp_path):
    small, large = vocab_pair
    result = breed(large, small, tmp_path / "child", settings=MOTHER_ONLY)

    child, father_weights, mother_weights = load_weights(result.out), load_weights(large), load_weights(small)
    small_ids = ids(small)
    for name in EMBEDDING_NAMES:
        assert child[name].shape[0] == 34
        for token, row in ids(large).items():
            expected = father_weights[name][row] if token in EXTRA else mother_weights[name][small_ids[token]]
            assert torch.equal(child[name][row], expected), (name, token)
    assert result.compatibility.vocabulary["father_only"] == 2


def test_padded_rows_kept(tmp_path):
    """A father whose embedding has 40 rows for 32 tokens keeps its 8 padding rows and vocab_size."""
    father = llama_with_tokens(tmp_path, "father", SPECIAL + LETTERS, seed=3, rows=40)
    mother = llama_with_tokens(tmp_path, "mother", SPECIAL + list(reversed(LETTERS)), seed=4)

    result = breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY)

    child, father_weights = load_weights(result.out), load_weights(father)
    for name in EMBEDDING_NAMES:
        assert child[name].shape[0] == 40
        assert torch.equal(child[name][32:], father_weights[name][32:]), name
    assert result.compatibility.vocabulary["padding_rows"] == 8
    assert json.loads((result.out / "config.json").read_text())["vocab_size"] == 40


def test_same_layout_other_token_order_goes_through_mapper(tmp_path):
    """Same shapes, different token order: a name-by-name merge would mix unrelated rows."""
    father = llama_with_tokens(tmp_path, "father", SPECIAL + LETTERS, seed=5)
    mother = llama_with_tokens(tmp_path, "mother", SPECIAL + list(reversed(LETTERS)), seed=6)
    _, _, _, mapping = prepare(str(father), str(mother))
    assert mapping.mother["model.embed_tokens.weight"].rows is not None
    assert mapping.report.vocabulary["moved"] == 28  # an even count of letters: reversal moves every one
    assert mapping.report.match_fraction == 1.0


# --- tied embeddings ----------------------------------------------------------------------------


def parameter_count(folder) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(folder)).parameters())


@pytest.mark.parametrize("mother_family", ["llama", "gemma"])
def test_tied_parents_give_tied_child(tmp_path, char_tokenizer_dir, vocab_size, mother_family):
    from transformers import AutoModelForCausalLM

    father = save_model(tmp_path / "father", llama_config(vocab_size, tie=True), seed=7, tokenizer_from=char_tokenizer_dir)
    if mother_family == "llama":
        plain = save_model(tmp_path / "plain", llama_config(vocab_size, tie=True), seed=8, tokenizer_from=char_tokenizer_dir)
        mother = rename_checkpoint(plain, tmp_path / "mother", lambda name: f"language_model.{name}")
    else:
        mother = save_family_model(tmp_path / "mother", "gemma", vocab_size, char_tokenizer_dir, seed=8, head_dim=8)

    child = breed(father, mother, tmp_path / "child", settings=HALF).out

    assert "lm_head.weight" not in load_weights(child)
    assert json.loads((child / "config.json").read_text())["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(str(child))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert parameter_count(child) == parameter_count(father)
    assert torch.isfinite(logits(child)).all()


def test_untied_father_reads_tied_mother_embedding(make_model, tmp_path, char_tokenizer_dir, vocab_size):
    father = make_model("father", seed=9)
    plain = save_model(tmp_path / "plain", llama_config(vocab_size, tie=True), seed=10, tokenizer_from=char_tokenizer_dir)
    mother = rename_checkpoint(plain, tmp_path / "mother", lambda name: f"language_model.{name}")

    child = load_weights(breed(father, mother, tmp_path / "child", settings=MOTHER_ONLY).out)

    assert torch.equal(child["lm_head.weight"], load_weights(plain)["model.embed_tokens.weight"])


def test_report_lists_vocabulary(vocab_pair):
    father, mother = vocab_pair
    report = match_parents(resolve_parent(str(father)), resolve_parent(str(mother)))
    assert report.to_dict()["vocabulary"]["father_rows"] == 32
    assert any(note.startswith("vocabularies differ: 32 shared tokens") for note in report.notes)
