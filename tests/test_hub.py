"""Hub search, siblings, cache listing, token checks, pre-flight, download and error messages.

The real huggingface_hub client talks to the loopback fake Hub of `hub_server.py`; no test
reaches the network.
"""

import ast
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from darwin_core import hub as hub_api
from darwin_core.errors import DarwinError, HubError, IncompatibleParentsError, ParentError
from darwin_core.memory import RUNTIME_OVERHEAD_BYTES
from hub_server import FAMILY, LICENSE, FakeHub, add_family, folder_files, use_as_default

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fresh fake Hub on 127.0.0.1, set as huggingface_hub's default endpoint, with an empty cache."""
    server = FakeHub().start()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    use_as_default(server, monkeypatch, tmp_path / "hf-cache")
    yield server
    server.stop()


@pytest.fixture
def family(hub, llama_family):
    return add_family(hub, llama_family)


def config_bytes(llama_family, **changes) -> bytes:
    config = json.loads((llama_family["a"] / "config.json").read_text())
    return json.dumps({**config, **changes}).encode()


# --- find ------------------------------------------------------------------------------------


def test_search_text_and_sort(hub, family):
    by_downloads = hub_api.search_models("tune", endpoint=hub.endpoint)
    by_likes = hub_api.search_models("tune", sort="likes", endpoint=hub.endpoint)

    assert [model.repo_id for model in by_downloads] == [FAMILY["a"], FAMILY["b"]]
    assert [model.repo_id for model in by_likes] == [FAMILY["b"], FAMILY["a"]]
    assert "search=tune" in hub.paths("GET")[0]


def test_search_filters(hub, family, llama_family, make_model):
    hub.add_repo("other/mistral-tune", make_model("mistral", model_type="mistral", architectures=["MistralForCausalLM"]))
    hub.add_repo("other/pickled-tune", {"config.json": config_bytes(llama_family), "pytorch_model.bin": b"\x80\x04pickle"})
    hub.add_repo("other/keras-tune", llama_family["a"], library_name="keras")

    llama = hub_api.search_models("tune", model_type="llama")
    of_base = hub_api.search_models("", base_model=FAMILY["base"])
    any_format = hub_api.search_models("tune", safetensors_only=False)

    assert {model.repo_id for model in llama} == {FAMILY["a"], FAMILY["b"]}
    assert {model.repo_id for model in of_base} == {FAMILY["a"], FAMILY["b"]}
    assert "other/pickled-tune" in {model.repo_id for model in any_format}
    assert "other/keras-tune" not in {model.repo_id for model in any_format}


def test_search_pages(hub, family, llama_family):
    for index in range(3):
        hub.add_repo(f"more/tune-{index}", llama_family["b"], downloads=10 - index)
    hub.max_page_size = 2  # the client must follow the Link header across server pages

    first = hub_api.search_models("tune", limit=2, page=0)
    second = hub_api.search_models("tune", limit=2, page=1)
    third = hub_api.search_models("tune", limit=2, page=2)
    beyond = hub_api.search_models("tune", limit=2, page=5)

    assert [model.repo_id for model in first] == [FAMILY["a"], FAMILY["b"]]
    assert [model.repo_id for model in second] == ["more/tune-0", "more/tune-1"]
    assert [model.repo_id for model in third] == ["more/tune-2"]
    assert beyond == []
    assert any("cursor=" in path for path in hub.paths("GET"))


def test_search_result_row(hub, family, llama_family):
    hub.add_repo("locked/tune", llama_family["a"], gated="manual", card_data={"license": "llama3"})

    rows = {model.repo_id: model.to_row() for model in hub_api.search_models("")}
    models = {model.repo_id: model for model in hub_api.search_models("")}

    assert rows[FAMILY["base"]] == [FAMILY["base"], "LlamaForCausalLM", hub_api.format_count(models[FAMILY["base"]].parameter_count), 300, LICENSE, "no"]
    assert rows["locked/tune"][-2:] == ["llama3", "yes"]
    assert models[FAMILY["a"]].base_models == (FAMILY["base"],)
    assert models[FAMILY["a"]].parameter_count == sum(t.numel() for t in _tensors(llama_family["a"]).values())
    assert len(hub_api.MODEL_TABLE_HEADERS) == len(rows[FAMILY["base"]])


def _tensors(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize(("count", "text"), [(999, "999"), (24_992, "25K"), (135_000_000, "135M"), (7_241_732_096, "7.24B")])
def test_format_count(count, text):
    assert hub_api.format_count(count) == text


def test_siblings_offer_common_base(hub, family, llama_family):
    hub.add_repo("fans/math-tune-v2", llama_family["a"], card_data={"base_model": FAMILY["a"]}, downloads=50)
    hub.add_repo("fans/base-q4", llama_family["a"], card_data={"base_model": FAMILY["base"], "base_model_relation": "quantized"})

    siblings = hub_api.find_siblings(FAMILY["a"])

    assert siblings.base == FAMILY["base"]
    assert [model.repo_id for model in siblings.models] == [FAMILY["b"], "fans/math-tune-v2"]


def test_siblings_without_declared_base(hub, family):
    siblings = hub_api.find_siblings(FAMILY["base"])

    assert siblings.base is None
    assert [model.repo_id for model in siblings.models] == [FAMILY["a"], FAMILY["b"]]


def test_cached_models_need_no_network(hub, family, tmp_path, monkeypatch):
    from huggingface_hub import constants

    folder, commit = hub_api.fetch_parent(FAMILY["a"])
    hub_api.preflight(FAMILY["a"], FAMILY["b"])  # caches the mother's config.json only
    hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests_before = len(hub.requests)

    cached = hub_api.cached_models("tune")

    assert [model.repo_id for model in cached] == [FAMILY["a"]]
    assert cached[0].revision == commit
    assert cached[0].license == LICENSE
    assert cached[0].architecture == "LlamaForCausalLM"
    assert cached[0].size_bytes > 0
    assert len(hub.requests) == requests_before
    assert hub_api.cached_models("tune", model_type="mistral") == []
    assert hub_api.cached_models(cache_dir=tmp_path / "no-cache-here") == []


# --- token -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "orgs", "scoped", "repo_id", "can_write", "message"),
    [
        ("write", None, None, "alice/child", True, "can write to alice/child"),
        ("read", None, None, "alice/child", False, "read-only"),
        ("write", {"lab": "read"}, None, "lab/child", False, "cannot write to lab/child"),
        ("write", {"lab": "write"}, None, "lab/child", True, "can write to lab/child"),
        ("fineGrained", None, [{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.write"]}], "alice/child", True, "can write"),
        ("fineGrained", None, [{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read"]}], "alice/child", False, "cannot write"),
    ],
    ids=["write", "read", "org-reader", "org-writer", "fine-grained-write", "fine-grained-read"],
)
def test_token_status_roles(hub, role, orgs, scoped, repo_id, can_write, message):
    token = hub.add_account("alice", role=role, orgs=orgs, scoped=scoped)

    status = hub_api.token_status(token, repo_id=repo_id)

    assert status.valid and status.user == "alice" and status.role == role
    assert status.can_write is can_write
    assert message in status.message
    assert token not in json.dumps(status.to_dict())


def test_token_status_missing_and_rejected(hub, monkeypatch):
    assert hub_api.token_status(None).present is False
    assert "set the HF_TOKEN environment variable" in hub_api.token_status(None).message

    rejected = hub_api.token_status("hf_" + "x" * 30)
    assert rejected.present and not rejected.valid
    assert "HTTP 401" in rejected.message

    token = hub.add_account("bob")
    monkeypatch.setenv("HF_TOKEN", token)
    assert hub_api.token_status().user == "bob"


# --- check before download -------------------------------------------------------------------


def test_preflight_reads_headers_only(hub, family):
    report = hub_api.preflight(FAMILY["a"], FAMILY["b"], FAMILY["base"])

    assert report.ok and report.compatibility.compatible
    assert report.compatibility.same_family
    assert report.father.revision == family["a"].head.oid
    assert report.father.license == LICENSE
    # config.json is in the cache once the pre-flight has read it, so only the rest is still to download.
    expected = sum(len(data) for name, data in family["a"].head.files.items() if name not in (".gitattributes", "config.json"))
    assert report.father.download_bytes == expected
    assert report.download_bytes == sum(check.download_bytes for check in (report.father, report.mother, report.base))
    assert report.memory_needed_bytes > RUNTIME_OVERHEAD_BYTES
    header_reads = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert len(header_reads) == 3 and all("range" in r.headers for r in header_reads)
    assert hub.weight_reads() == []


def test_preflight_sharded_parent(hub, family, make_model):
    hub.add_repo("shards/tune", make_model("sharded", seed=3, shards=2))

    report = hub_api.preflight(FAMILY["a"], "shards/tune")

    assert report.ok
    assert report.mother.summary.parameter_count == report.father.summary.parameter_count
    assert hub.weight_reads() == []


def test_preflight_mixes_local_and_hub(hub, family, llama_family):
    report = hub_api.preflight(str(llama_family["a"]), FAMILY["b"])

    assert report.ok
    assert report.father.kind == "local" and report.father.download_bytes == 0
    assert report.mother.kind == "hub"


def test_preflight_adapter_checked_through_its_base(hub, family):
    adapter_config = {"base_model_name_or_path": FAMILY["base"], "peft_type": "LORA", "r": 2}
    adapter = save({"base_model.model.lm_head.lora_A.weight": torch.zeros(2, 32)})
    hub.add_repo("peft/tune", {"adapter_config.json": json.dumps(adapter_config).encode(), "adapter_model.safetensors": adapter})

    report = hub_api.preflight("peft/tune", FAMILY["b"])

    assert report.ok
    assert report.father.kind == "hub-adapter"
    assert report.father.summary.parameter_count == report.mother.summary.parameter_count
    assert hub.weight_reads() == []


REJECTIONS = [
    ("missing-with-token", "ghost/model", {}, True, r"ghost/model not found on the Hub, or the token's account cannot see it"),
    ("private-without-token", "secret/model", {"private": True}, False, r"secret/model not found on the Hub, or it is private and no token was given"),
    ("gated", "locked/model", {"gated": "manual"}, True, r"locked/model is gated: open its page on the Hub, accept its conditions"),
    ("pickle-only", "old/model", {"files": "pickle"}, False, r"old/model: holds only pickled PyTorch weights \(pytorch_model.bin\)"),
    ("gguf-only", "quant/gguf", {"files": "gguf"}, False, r"quant/gguf contains GGUF files only \(model-Q4_K_M.gguf\)"),
    ("unknown-format", "odd/model", {"files": "unknown"}, False, r"odd/model: no model.safetensors .* weight format is unknown"),
    ("quantized-config", "quant/bnb", {"files": "quantized-config"}, False, r"quant/bnb: config.json declares a bitsandbytes-quantized checkpoint"),
    ("quantized-dtype", "quant/int8", {"files": "quantized-dtype"}, False, r"quant/int8: weight matrices are stored as I8"),
    ("custom-code", "custom/model", {"files": "custom-code"}, False, r"custom/model: the architecture needs custom code"),
    ("no-config", "bare/model", {"files": "no-config"}, False, r"bare/model: no config.json in the repository"),
]


def rejection_files(kind: str, llama_family) -> dict[str, bytes]:
    weights = (llama_family["a"] / "model.safetensors").read_bytes()
    if kind == "pickle":
        return {"config.json": config_bytes(llama_family), "pytorch_model.bin": b"\x80\x04pickle"}
    if kind == "gguf":
        return {"model-Q4_K_M.gguf": b"GGUF" + bytes(64)}
    if kind == "unknown":
        return {"config.json": config_bytes(llama_family), "flax_model.msgpack": b"\x81\xa1a\x01"}
    if kind == "quantized-config":
        return {"config.json": config_bytes(llama_family, quantization_config={"quant_method": "bitsandbytes"}), "model.safetensors": weights}
    if kind == "quantized-dtype":
        return {"config.json": config_bytes(llama_family), "model.safetensors": save({"model.embed_tokens.weight": torch.zeros(8, 4, dtype=torch.int8)})}
    if kind == "custom-code":
        return {"config.json": config_bytes(llama_family, auto_map={"AutoModelForCausalLM": "modeling.Custom"}), "model.safetensors": weights}
    if kind == "no-config":
        return {"model.safetensors": weights}
    return folder_files(llama_family["a"])


@pytest.mark.parametrize(("repo_id", "settings", "with_token", "message"), [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS])
def test_preflight_rejects_parent(hub, family, llama_family, repo_id, settings, with_token, message):
    settings = dict(settings)
    files = rejection_files(settings.pop("files", "family"), llama_family)
    if repo_id != "ghost/model":
        hub.add_repo(repo_id, files, **settings)
    token = hub.add_account("alice") if with_token else None

    with pytest.raises(DarwinError, match=message):
        hub_api.preflight(repo_id, FAMILY["b"], token=token)
    assert hub.weight_reads() == []


def test_preflight_rejects_unknown_revision(hub, family):
    with pytest.raises(HubError, match=r"darwin-test/math-tune: revision not found; check the branch, tag or commit after '@'"):
        hub_api.preflight(f"{FAMILY['a']}@{'0' * 40}", FAMILY["b"])


def test_preflight_gated_with_access(hub, family, llama_family):
    hub.add_repo("locked/model", llama_family["a"], gated="manual", granted={"alice"})
    token = hub.add_account("alice")

    assert hub_api.preflight("locked/model", FAMILY["b"], token=token).ok
    assert hub.weight_reads() == []


def test_preflight_incompatible_pair(hub, family, make_model):
    hub.add_repo("wide/model", make_model("wide", hidden=48))

    report = hub_api.preflight(FAMILY["a"], "wide/model")

    assert not report.ok and not report.compatibility.compatible
    assert "Parents of different sizes cannot be merged" in report.problems[0]
    with pytest.raises(IncompatibleParentsError, match=r"lm_head.weight: shape \(\d+, 32\) in the father \(darwin-test/math-tune\) but \(\d+, 48\) in the mother"):
        report.require_ok()
    assert hub.weight_reads() == []


def test_preflight_machine_too_small(hub, family):
    streaming = hub_api.preflight(FAMILY["a"], FAMILY["b"], memory_limit_bytes=1024)
    in_memory = hub_api.preflight(FAMILY["a"], FAMILY["b"], mode="memory")
    no_disk = hub_api.preflight(FAMILY["a"], FAMILY["b"], disk_limit_bytes=1024)

    assert streaming.problems == (streaming.problems[0],)
    assert streaming.problems[0].startswith("not enough memory for the streaming breed")
    assert in_memory.memory_needed_bytes > streaming.memory_needed_bytes
    father_and_mother = in_memory.father.summary.total_bytes + in_memory.mother.summary.total_bytes
    assert in_memory.memory_needed_bytes - streaming.memory_needed_bytes == father_and_mother + in_memory.father.summary.total_bytes
    with pytest.raises(DarwinError, match=r"not enough disk space for the download: the parents need .* but only 1.0 KiB is free"):
        no_disk.require_ok()
    with pytest.raises(ValueError, match="mode must be one of streaming, memory"):
        hub_api.preflight(FAMILY["a"], FAMILY["b"], mode="gpu")


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_pinned_revision(hub, family, llama_family):
    first = family["a"].head.oid
    files = dict(family["a"].head.files, **{"generation_config.json": b'{"temperature": 0.5}', "training_args.bin": b"\x80\x04"})
    family["a"].commits.append(type(family["a"].head)("f" * 40, files, "second commit"))

    folder, commit = hub_api.fetch_parent(FAMILY["a"], first, endpoint=hub.endpoint)
    latest, latest_commit = hub_api.fetch_parent(FAMILY["a"])

    assert commit == first and folder.name == first
    assert latest_commit == "f" * 40
    assert (folder / "generation_config.json").read_bytes() == (llama_family["a"] / "generation_config.json").read_bytes()
    assert (latest / "generation_config.json").read_bytes() == b'{"temperature": 0.5}'
    assert not (latest / "training_args.bin").exists()
    assert not any("training_args.bin" in path for path in hub.paths("GET"))
    assert sorted(path.name for path in folder.iterdir()) == sorted(name for name in family["a"].head.files if name != ".gitattributes" and not name.endswith(".bin"))


def test_fetch_rejects_pickle_only_repo(hub, llama_family):
    hub.add_repo("old/model", rejection_files("pickle", llama_family))

    with pytest.raises(ParentError, match=r"old/model: holds only pickled PyTorch weights"):
        hub_api.fetch_parent("old/model")
    assert not any("/resolve/" in path for path in hub.paths())


def test_fetch_reports_progress(hub, family):
    updates = []

    hub_api.fetch_parent(FAMILY["a"], progress=lambda description, done, total: updates.append((description, done, total)))

    byte_updates = [update for update in updates if update[0] == "Downloading bytes"]
    weights = len(family["a"].head.files["model.safetensors"])
    assert byte_updates and byte_updates[-1][1] >= weights
    assert byte_updates[-1][2] >= weights


def test_fetch_offline_uses_cache(hub, family, monkeypatch):
    from huggingface_hub import constants

    folder, commit = hub_api.fetch_parent(FAMILY["a"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests_before = len(hub.requests)

    again, again_commit = hub_api.fetch_parent(FAMILY["a"])

    assert (again, again_commit) == (folder, commit)
    assert len(hub.requests) == requests_before
    with pytest.raises(HubError, match=r"cannot download darwin-test/code-tune: offline mode is on \(HF_HUB_OFFLINE=1\)"):
        hub_api.fetch_parent(FAMILY["b"])
    assert len(hub.requests) == requests_before


def test_preflight_offline_reads_cached_snapshot(hub, family, monkeypatch):
    from huggingface_hub import constants

    hub_api.fetch_parent(FAMILY["a"])
    hub_api.fetch_parent(FAMILY["b"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    requests_before = len(hub.requests)

    report = hub_api.preflight(FAMILY["a"], FAMILY["b"])

    assert report.ok and report.download_bytes == 0
    assert report.father.revision == family["a"].head.oid
    assert len(hub.requests) == requests_before


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_code", "message"),
    [
        (401, None, r"cannot read darwin-test/math-tune: the Hub rejected the token \(HTTP 401\)"),
        (429, None, r"rate-limited this client \(HTTP 429\); wait 7 seconds and try again"),
        (500, None, r"the Hub had a server error \(HTTP 500\); try again in a few minutes"),
        (503, None, r"the Hub had a server error \(HTTP 503\)"),
        (404, "RepoNotFound", r"darwin-test/math-tune not found on the Hub, or the token's account cannot see it"),
        (403, "GatedRepo", r"darwin-test/math-tune is gated"),
        (418, None, r"the Hub answered HTTP 418 \(injected failure\)"),
    ],
    ids=["unauthorised", "rate-limited", "server-error", "unavailable", "not-found", "gated", "other"],
)
def test_http_errors_map_to_messages(hub, family, status, error_code, message):
    token = hub.add_account("alice")
    hub.fail(r"GET /api/models/darwin-test/math-tune", status, error_code)

    with pytest.raises(HubError, match=message):
        hub_api.father_model_type(FAMILY["a"], token=token)


def test_unreachable_hub_message(hub):
    closed = "http://127.0.0.1:9"

    with pytest.raises(HubError, match=r"cannot read darwin-test/math-tune: the Hub cannot be reached \(ConnectError\)"):
        hub_api.father_model_type(FAMILY["a"], endpoint=closed)
    with pytest.raises(HubError, match=r"cannot check darwin-test/math-tune: the Hub cannot be reached"):
        hub_api.preflight(FAMILY["a"], FAMILY["b"], endpoint=closed)


def test_offline_search_message(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(HubError, match=r"cannot run the model search: offline mode is on"):
        hub_api.search_models("tune")


def test_invalid_arguments(hub):
    with pytest.raises(ValueError, match="sort must be one of downloads, likes"):
        hub_api.search_models("x", sort="trending")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        hub_api.search_models("x", limit=0)
    with pytest.raises(ParentError, match="not found"):
        hub_api.father_model_type("./no/such/folder")


def test_only_hub_module_imports_huggingface_hub():
    importers = []
    for path in sorted((REPO_ROOT / "darwin_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(name == "huggingface_hub" or name.startswith("huggingface_hub.") for name in names):
                importers.append(path.relative_to(REPO_ROOT).as_posix())

    assert sorted(set(importers)) == ["darwin_core/hub.py"]
