"""Breeding from Hub parents, pushing children with their model card, the Hub CLI, and token hygiene.

The real huggingface_hub client talks to the loopback fake Hub of `hub_server.py`; no test
reaches the network.
"""

import json
import logging
import shutil
from types import SimpleNamespace

import pytest
import yaml

from darwin_core import hub as hub_api
from darwin_core.breed import BreedSettings, breed
from darwin_core.card import card_body, choose_license
from darwin_core.cli import main
from darwin_core.errors import DarwinError, DarwinWarning, HubError
from darwin_core.plan import PlanSettings
from hub_server import FAMILY, LICENSE, Commit, FakeHub, add_family, new_commit_oid, use_as_default

# A fixed-recipe merge skips the MRI scan, whose probe passes are the slow part of a breed. The
# card's MRI, health and eval sections are checked on a hand-made record instead.
FAST = BreedSettings(run_health=False, eval_suites=(), plan=PlanSettings(method="linear"))


@pytest.fixture(scope="module")
def bred(tmp_path_factory, llama_family):
    """A child bred from two Hub parents (the father pinned to an older commit) and a Hub base."""
    server = FakeHub().start()
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_TOKEN", raising=False)
        use_as_default(server, patch, tmp_path_factory.mktemp("hf-cache"))
        repos = add_family(server, llama_family)
        first = repos["a"].head.oid
        newer = dict(repos["a"].head.files, **{"generation_config.json": b'{"temperature": 0.5}'})
        repos["a"].commits.append(Commit(new_commit_oid(), newer, "newer commit"))

        out = tmp_path_factory.mktemp("bred") / "child"
        result = breed(f"{FAMILY['a']}@{first}", FAMILY["b"], out, base=FAMILY["base"], settings=FAST)
    server.stop()
    return SimpleNamespace(out=out, record=result.record, father_commit=first, mother_commit=repos["b"].head.oid,
                           base_commit=repos["base"].head.oid)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    server = FakeHub().start()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    use_as_default(server, monkeypatch, tmp_path / "hf-cache")
    yield server
    server.stop()


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def local_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


# --- breeding from the Hub -------------------------------------------------------------------


def test_breed_records_hub_commits(bred):
    parents = json.loads((bred.out / "darwin.json").read_text())["parents"]

    assert parents["father"]["ref"] == f"{FAMILY['a']}@{bred.father_commit}"
    assert parents["father"]["kind"] == "hub"
    assert parents["father"]["revision"] == bred.father_commit
    assert parents["mother"]["revision"] == bred.mother_commit
    assert parents["base"]["revision"] == bred.base_commit
    # The pinned older commit had the original generation config, not the newer one.
    assert b"temperature" not in (bred.out / "generation_config.json").read_bytes()


def test_child_card_front_matter(bred):
    card = (bred.out / "README.md").read_text()
    metadata = front_matter(card)

    assert metadata["base_model"] == [FAMILY["a"], FAMILY["b"]]
    assert metadata["tags"] == ["merge", "evolutionary-merge", "darwin"]
    assert metadata["license"] == LICENSE
    assert metadata["pipeline_tag"] == "text-generation"
    for heading in ("## Parents", "## Genome", "## Merge plan", "## Lineage", "## Reproduce"):
        assert heading in card
    assert f"--father {FAMILY['a']}@{bred.father_commit}" in card
    assert f"--mother {FAMILY['b']}@{bred.mother_commit}" in card
    assert f"--base {FAMILY['base']}@{bred.base_commit}" in card


def test_card_body_mri_health_and_eval(bred):
    record = dict(bred.record)
    record["mri"] = {"mean_ratio": 0.5, "by_component": {"attention": 0.49, "ffn": 0.51}, "mean_task_cosine": 0.12}
    record["health"] = {"verdict": "warning", "reasons": ["layer 1 left the parents' band"]}
    record["eval"] = {"suites": [{
        "suite": "arith", "split": "test",
        "results": [{"model": "child", "accuracy": 0.6, "ci95": [0.4, 0.8], "n": 20}],
        "paired": [{"against": "father", "wins": 5, "losses": 2, "p_value": 0.453125}],
    }]}

    body = card_body(record)

    assert "Mean r_MRI 0.500 (attention 0.490, ffn 0.510)." in body
    assert "Mean cosine between the parents' task vectors: 0.120." in body
    assert "Verdict: **warning**." in body
    assert "- layer 1 left the parents' band" in body
    assert "| child | 0.600 | [0.400, 0.800] | 20 |" in body
    assert "| father | 5 | 2 | 0.453 |" in body


def test_license_differs_warns():
    with pytest.warns(DarwinWarning, match="the parents have different licenses"):
        assert choose_license({"a": "mit", "b": LICENSE}) == "other"


# --- push ------------------------------------------------------------------------------------


def test_push_uploads_child_in_one_commit(hub, bred):
    token = hub.add_account("alice")

    url = hub_api.push_child(bred.out, "alice/merged", token=token, endpoint=hub.endpoint)

    repo = hub.repos["alice/merged"]
    assert url == f"{hub.endpoint}/alice/merged"
    assert not repo.private
    assert len(repo.commits) == 2  # the creation commit and the upload
    uploaded = {name: data for name, data in repo.head.files.items() if name != ".gitattributes"}
    assert uploaded == local_files(bred.out)
    assert repo.head.message == f"Add Darwin child of {FAMILY['a']}@{bred.father_commit} x {FAMILY['b']}"
    assert front_matter(uploaded["README.md"].decode())["base_model"] == [FAMILY["a"], FAMILY["b"]]
    assert json.loads(uploaded["darwin.json"])["parents"]["father"]["revision"] == bred.father_commit
    assert sum(path.endswith("/commit/main") for path in hub.paths("POST")) == 1


def test_push_private_to_token_account(hub, bred):
    token = hub.add_account("alice")

    url = hub_api.push_child(bred.out, "merged", private=True, token=token)

    assert url.endswith("/alice/merged")
    assert hub.repos["alice/merged"].private


def test_push_to_existing_repo_adds_commit(hub, bred):
    token = hub.add_account("alice")
    hub.add_repo("alice/merged", {"notes.md": b"earlier work\n"}, library_name=None)

    hub_api.push_child(bred.out, "alice/merged", token=token)

    repo = hub.repos["alice/merged"]
    assert len(repo.commits) == 2
    assert repo.head.files["notes.md"] == b"earlier work\n"
    assert "model.safetensors" in repo.head.files


def test_failed_push_deletes_created_repo(hub, bred):
    token = hub.add_account("alice")
    hub.fail(r"POST /api/models/alice/merged/commit/", 500)

    with pytest.raises(HubError, match=r"cannot push to alice/merged: the Hub had a server error \(HTTP 500\)"):
        hub_api.push_child(bred.out, "alice/merged", token=token)

    assert "alice/merged" not in hub.repos
    assert hub.paths("DELETE") == ["/api/repos/delete"]


def test_failed_push_keeps_repo_when_asked(hub, bred):
    token = hub.add_account("alice")
    hub.fail(r"POST /api/models/alice/merged/commit/", 500)

    with pytest.raises(HubError, match="server error"):
        hub_api.push_child(bred.out, "alice/merged", token=token, keep_empty_repo=True)

    assert list(hub.repos["alice/merged"].head.files) == [".gitattributes"]
    assert hub.paths("DELETE") == []


def test_failed_push_never_deletes_existing_repo(hub, bred):
    token = hub.add_account("alice")
    hub.add_repo("alice/merged", {"notes.md": b"earlier work\n"}, library_name=None)
    hub.fail(r"POST /api/models/alice/merged/commit/", 503)

    with pytest.raises(HubError, match="server error"):
        hub_api.push_child(bred.out, "alice/merged", token=token)

    assert "alice/merged" in hub.repos
    assert hub.paths("DELETE") == []


@pytest.mark.parametrize(
    ("account", "repo_id", "message"),
    [
        (None, "alice/merged", r"pushing needs a token with write access: set the HF_TOKEN environment variable, or enter one in the studio.s token field"),
        ({"role": "read"}, "alice/merged", r"cannot push to alice/merged: token of alice is read-only"),
        ({"role": "write", "orgs": {"lab": "read"}}, "lab/merged", r"cannot push to lab/merged: token of alice \(write\) cannot write to lab/merged"),
        ({"role": "fineGrained", "scoped": []}, "lab/merged", r"cannot push to lab/merged: the token has no write access to lab \(HTTP 403\)"),
        ("rejected", "alice/merged", r"cannot push to alice/merged: the Hub rejected the token \(HTTP 401\)"),
        ({"role": "write"}, "alice/bad..name", r"'alice/bad..name' is not a valid Hub repository id"),
    ],
    ids=["no-token", "read-only", "org-reader", "forbidden-namespace", "rejected-token", "invalid-id"],
)
def test_push_rejected(hub, bred, account, repo_id, message):
    if account == "rejected":
        token = "hf_" + "z" * 30
    else:
        token = hub.add_account("alice", **account) if account else None

    with pytest.raises(HubError, match=message):
        hub_api.push_child(bred.out, repo_id, token=token)

    assert list(hub.repos) == []
    assert hub.paths("DELETE") == []


def test_push_damaged_child_rejected(hub, bred, tmp_path):
    token = hub.add_account("alice")
    damaged = tmp_path / "damaged"
    shutil.copytree(bred.out, damaged)
    with open(damaged / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")

    with pytest.raises(DarwinError, match=r"was not pushed: model.safetensors does not match its checksum"):
        hub_api.push_child(damaged, "alice/merged", token=token)
    assert hub.requests == []


# --- CLI -------------------------------------------------------------------------------------


def test_cli_search_json(hub, llama_family, capsys):
    add_family(hub, llama_family)

    assert main(["search", "tune", "--sort", "likes", "--json"]) == 0

    output = json.loads(capsys.readouterr().out)
    assert output["source"] == "Hub"
    assert [model["repo_id"] for model in output["models"]] == [FAMILY["b"], FAMILY["a"]]


def test_cli_search_like_father(hub, llama_family, capsys):
    add_family(hub, llama_family)

    assert main(["search", "--like-father", str(llama_family["a"]), "--limit", "1", "--page", "1"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == hub_api.MODEL_TABLE_HEADERS
    assert lines[1].split()[0] == FAMILY["a"]


def test_cli_siblings(hub, llama_family, capsys):
    add_family(hub, llama_family)

    assert main(["siblings", FAMILY["a"]]) == 0

    output = capsys.readouterr().out
    assert f"declared base (use as --base): {FAMILY['base']}" in output
    assert FAMILY["b"] in output


def test_cli_preflight_exit_codes(hub, llama_family, make_model, capsys):
    add_family(hub, llama_family)
    hub.add_repo("wide/model", make_model("wide", hidden=48))

    assert main(["preflight", FAMILY["a"], FAMILY["b"], "--base", FAMILY["base"]]) == 0
    assert "compatible: yes" in capsys.readouterr().out

    assert main(["preflight", FAMILY["a"], "wide/model", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False
    assert captured.err.startswith("darwin preflight: error: lm_head.weight: shape")
    assert len(captured.err.strip().splitlines()) == 1
    assert hub.weight_reads() == []


def test_cli_push_reads_hf_token(hub, bred, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", hub.add_account("alice"))

    assert main(["push", str(bred.out), "--repo", "merged", "--private", "--json"]) == 0

    assert json.loads(capsys.readouterr().out) == {"url": f"{hub.endpoint}/alice/merged", "private": True}
    assert hub.repos["alice/merged"].private


def test_cli_push_has_no_token_option(bred):
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(bred.out), "--repo", "merged", "--token", "hf_x"])
    assert exit_info.value.code == 2


def test_cli_push_without_token(hub, bred, capsys):
    assert main(["push", str(bred.out), "--repo", "merged"]) == 1
    assert capsys.readouterr().err.startswith("darwin push: error: pushing needs a token with write access")


# --- token hygiene ---------------------------------------------------------------------------


def test_token_never_leaks(hub, bred, llama_family, tmp_path, monkeypatch, caplog, capsys):
    token = hub.add_account("alice")
    read_only = hub.add_account("reader", role="read")
    add_family(hub, llama_family)
    hub.add_repo("alice/secret", llama_family["a"], private=True, card_data={"license": LICENSE})
    for name in ("huggingface_hub", "httpx", "httpx2", "httpcore", "httpcore2", "darwin_core"):
        caplog.set_level(logging.DEBUG, logger=name)
    caplog.set_level(logging.DEBUG)
    errors = []

    hub_api.token_status(token, repo_id="alice/merged")
    hub_api.search_models("tune", token=token)
    hub_api.preflight("alice/secret", FAMILY["b"], token=token)
    hub_api.fetch_parent("alice/secret", token=token)
    hub_api.push_child(bred.out, "alice/merged", token=token)
    hub.fail(r"POST /api/models/alice/broken/commit/", 500)
    for repo_id, push_token in (("alice/broken", token), ("reader/merged", read_only)):
        with pytest.raises(HubError) as error:
            hub_api.push_child(bred.out, repo_id, token=push_token)
        errors.append(str(error.value))
    monkeypatch.setenv("HF_TOKEN", token)
    assert main(["--verbose", "push", str(bred.out), "--repo", "alice/merged-cli"]) == 0
    with pytest.raises(HubError) as error:
        hub_api.preflight("ghost/model", FAMILY["b"])
    errors.append(str(error.value))

    captured = capsys.readouterr()
    for secret in (token, read_only):
        assert secret not in caplog.text
        assert secret not in captured.out + captured.err
        assert all(secret not in message for message in errors)
        for request in hub.requests:
            assert secret not in request.path
            assert secret.encode() not in request.body
        for folder in (tmp_path, bred.out):
            for path in folder.rglob("*"):
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path
    assert any("authorization" in request.headers for request in hub.requests)
