"""Bad input and faults: each case has its own message, and nothing half-written is left behind."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from darwin_core.archive import safe_extract_zip
from darwin_core.breed import BreedSettings, breed, verify_child
from darwin_core.errors import DarwinError, GenomeError, OutputError, ParentError
from darwin_core.genome import LayerRatios
from darwin_core.parents import resolve_parent

FAST = BreedSettings(run_health=False, eval_suites=())
REPO = Path(__file__).resolve().parent.parent


def edit_tensor(folder: Path, name: str, edit) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors[name] = edit(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})


def visible_entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_nan_in_parent_rejected(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2)

    def poison(tensor):
        tensor = tensor.clone()
        tensor[0, :3] = float("nan")
        return tensor

    edit_tensor(mother, "model.layers.1.mlp.up_proj.weight", poison)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ParentError, match=r"model.layers.1.mlp.up_proj.weight holds 3 NaN or Inf values in the mother .*--allow-nonfinite"):
        breed(father, mother, out / "child", settings=FAST)
    assert visible_entries(out) == []


def test_nan_in_parent_allowed_fails_health(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2)
    edit_tensor(mother, "model.norm.weight", lambda t: torch.full_like(t, float("inf")))
    settings = BreedSettings(eval_suites=(), allow_nonfinite_parents=True)
    result = breed(father, mother, tmp_path / "child", settings=settings)
    assert result.health.verdict == "failed"
    assert "model.norm.weight" in result.health.nonfinite_tensors


def test_all_zero_tensor_breeds(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2)
    edit_tensor(father, "model.layers.0.self_attn.o_proj.weight", torch.zeros_like)
    edit_tensor(mother, "model.layers.0.self_attn.o_proj.weight", torch.zeros_like)
    result = breed(father, mother, tmp_path / "child", settings=BreedSettings(eval_suites=()))
    child = load_file(result.out / "model.safetensors")
    assert torch.equal(child["model.layers.0.self_attn.o_proj.weight"], torch.zeros(32, 32))
    assert all(torch.isfinite(t).all() for t in child.values())
    assert result.plan.entries["model.layers.0.self_attn.o_proj.weight"].r_mri is not None


def test_config_fields_and_files_carried(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2)
    config = json.loads((father / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    config["custom_field_from_a_lab"] = {"keep": [1, 2, 3]}
    (father / "config.json").write_text(json.dumps(config, indent=2))
    (father / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "temperature": 0.3}))
    (father / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    child = breed(father, mother, tmp_path / "child", settings=FAST).out
    assert json.loads((child / "config.json").read_text()) == config
    assert json.loads((child / "generation_config.json").read_text())["temperature"] == 0.3
    assert (child / "chat_template.jinja").read_text() == (father / "chat_template.jinja").read_text()


def test_extended_genome_wrong_layer_count(llama_family, tmp_path):
    layers = LayerRatios(attn=(0.5,) * 5, ffn=(0.5,) * 5)
    with pytest.raises(GenomeError, match="ratios for 5 layers but the father has 2"):
        breed(llama_family["a"], llama_family["b"], tmp_path / "child", layers=layers, settings=FAST)
    assert visible_entries(tmp_path) == []


def test_output_parent_is_a_file(llama_family, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((OutputError, OSError)):
        breed(llama_family["a"], llama_family["b"], blocker / "child", settings=FAST)
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_output_not_writable(llama_family, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            breed(llama_family["a"], llama_family["b"], locked / "child", settings=FAST)
    finally:
        locked.chmod(0o755)


BREED_SCRIPT = """
import resource, signal, sys
from darwin_core.breed import BreedSettings, breed
from darwin_core.errors import DarwinError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # make an over-limit write fail with EFBIG instead of killing us
limit = int(sys.argv[4])
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    breed(sys.argv[1], sys.argv[2], sys.argv[3], settings=BreedSettings(run_health=False, eval_suites=()))
except DarwinError as error:
    print("ERROR:", error)
    sys.exit(3)
"""


def run_breed_process(father, mother, out, file_size_limit: int = 0, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", BREED_SCRIPT, str(father), str(mother), str(out), str(file_size_limit)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, **kwargs,
    )


def test_disk_full_mid_write(make_model, tmp_path):
    father = make_model("father", seed=1, hidden=64, ffn=128)
    mother = make_model("mother", seed=2, hidden=64, ffn=128)
    weight_bytes = (father / "model.safetensors").stat().st_size
    out_root = tmp_path / "out"
    out_root.mkdir()
    process = run_breed_process(father, mother, out_root / "child", file_size_limit=weight_bytes // 3)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 3, output
    assert "no space left" in output or "File too large" in output
    assert "needs about" in output
    assert "partial child was removed" in output
    assert visible_entries(out_root) == []


def test_sigkill_never_leaves_a_complete_looking_child(make_model, tmp_path):
    father = make_model("father", seed=1, hidden=128, ffn=512, layers=4)
    mother = make_model("mother", seed=2, hidden=128, ffn=512, layers=4)
    rng = random.Random(0)
    for attempt in range(6):
        out = tmp_path / f"run-{attempt}" / "child"
        out.parent.mkdir()
        process = run_breed_process(father, mother, out)
        time.sleep(rng.uniform(0.5, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if out.exists():
            assert verify_child(out) == [], f"attempt {attempt}: a folder at the output is not a complete child"
            from transformers import AutoModelForCausalLM

            AutoModelForCausalLM.from_pretrained(str(out))
        leftovers = [p for p in out.parent.iterdir() if p.name.startswith(".child.partial-")]
        if leftovers:
            # The next breed to the same output removes folders left by dead processes.
            breed(father, mother, out, settings=FAST, overwrite=True)
            assert [p for p in out.parent.iterdir() if p.name.startswith(".child.partial-")] == []
            assert verify_child(out) == []


def test_inspect_verifies_checksums(llama_family, tmp_path, capsys):
    from darwin_core.cli import main

    out = breed(llama_family["a"], llama_family["b"], tmp_path / "child", settings=FAST).out
    assert main(["inspect", str(out)]) == 0
    assert "checksums: ok" in capsys.readouterr().out

    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one damaged byte in the last tensor; the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as stopped:
        main(["inspect", str(out)])
    assert stopped.value.code == 1
    assert "model.safetensors does not match its checksum in darwin.json" in capsys.readouterr().out


def test_pickle_only_folder_needs_permission(llama_family, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(load_file(llama_family["a"] / "model.safetensors"), pickled / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((llama_family["a"] / name).read_bytes())
    with pytest.raises(ParentError, match="pass --allow-pickle"):
        resolve_parent(str(pickled))
    parent = resolve_parent(str(pickled), allow_pickle=True)
    assert parent.kind == "pickle"
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(parent.checkpoint.get(name), load_file(llama_family["a"] / "model.safetensors")[name])
    result = breed(str(pickled), llama_family["b"], tmp_path / "child", settings=FAST, allow_pickle=True)
    assert verify_child(result.out) == []


def make_zip(path: Path, entries: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            bundle.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(
    "entries, symlink, message",
    [
        ({"../escape.txt": b"x"}, None, "points outside the upload folder"),
        ({"/tmp/absolute.txt": b"x"}, None, "points outside the upload folder"),
        ({"model/config.json": b"{}"}, "model/link", "is a symbolic link"),
    ],
    ids=["dot-dot", "absolute", "symlink"],
)
def test_zip_cannot_escape(tmp_path, entries, symlink, message):
    archive = make_zip(tmp_path / "upload.zip", entries, symlink)
    target = tmp_path / "uploads" / "model"
    with pytest.raises(DarwinError, match=message):
        safe_extract_zip(archive, target)
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/absolute.txt").exists()


def test_zip_too_large(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {"model/model.safetensors": b"0" * 4096})
    with pytest.raises(DarwinError, match="more than the 1000 allowed"):
        safe_extract_zip(archive, tmp_path / "uploads" / "big", max_bytes=1000)


def test_zip_of_a_model_folder_is_a_parent(llama_family, tmp_path):
    entries = {f"tiny/{path.name}": path.read_bytes() for path in llama_family["a"].iterdir()}
    folder = safe_extract_zip(make_zip(tmp_path / "tiny.zip", entries), tmp_path / "uploads" / "tiny")
    assert folder.name == "tiny"
    assert resolve_parent(str(folder)).checkpoint.parameter_count > 0


def test_evolution_memory_refused_before_loading(llama_family):
    from darwin_core.evolve import Evolution, EvolveSettings

    evolution = Evolution(llama_family["a"], llama_family["b"], settings=EvolveSettings(suites=(("tiny", 1.0),)), breed_settings=FAST)
    with pytest.raises(DarwinError, match=r"needs about .* of memory but only 1000 B is available"):
        evolution.require_memory(available=1000)
    assert evolution._context is None


def test_studio_paths_confined(tmp_path, monkeypatch):
    import gradio as gr

    from app.paths import check_user_path

    allowed = tmp_path / "allowed"
    (allowed / "model").mkdir(parents=True)
    session_dir = tmp_path / "session"
    session_dir.mkdir()
    monkeypatch.setenv("DARWIN_ALLOWED_ROOTS", str(allowed))
    assert check_user_path(str(allowed / "model"), session_dir) == (allowed / "model").resolve()
    assert check_user_path(str(session_dir), session_dir) == session_dir.resolve()
    with pytest.raises(gr.Error, match="outside the folders this server allows"):
        check_user_path("/etc", session_dir)
    with pytest.raises(gr.Error, match="outside the folders this server allows"):
        check_user_path(str(allowed / ".." / "session" / ".." / ".."), session_dir)
    (allowed / "escape").symlink_to("/etc")
    with pytest.raises(gr.Error, match="outside the folders this server allows"):
        check_user_path(str(allowed / "escape"), session_dir)
    monkeypatch.delenv("DARWIN_ALLOWED_ROOTS")
    monkeypatch.setenv("SPACE_ID", "someone/darwin-studio")
    with pytest.raises(gr.Error, match="outside the folders this server allows"):
        check_user_path(str(allowed / "model"), session_dir)


def test_session_close_during_step(tmp_path, monkeypatch):
    import gradio as gr

    import app.state as state

    monkeypatch.setattr(state, "SESSIONS_ROOT", tmp_path / "sessions")
    session = state.Session.create()
    with session.job():
        (session.workdir / "child-1").mkdir()
        session.close()  # the page closed while a step was writing
        assert session.cancel.is_set()
        assert session.workdir.is_dir()
        (session.workdir / "child-1" / "late.txt").write_text("written after the close")
    assert not session.workdir.exists()  # removed when the step ended
    with pytest.raises(gr.Error, match="This session was closed"), session.job():
        pass

    idle = state.Session.create()
    idle.close()
    assert not idle.workdir.exists()
