"""Parent resolution and the checks that run before any weight is read: each bad input has its own message."""

import json
import shutil
import struct
import warnings

import pytest
import torch

from darwin_core.breed import BreedSettings, breed
from darwin_core.checkpoint import Checkpoint, read_safetensors_header
from darwin_core.errors import DarwinWarning, HubError, IncompatibleParentsError, ParentError
from darwin_core.parents import resolve_parent

FAST = BreedSettings(run_health=False, eval_suites=())


def assert_nothing_written(folder):
    leftovers = [path.name for path in folder.iterdir() if path.name.startswith((".child", "child"))]
    assert leftovers == []


def rewrite_header(path, edit):
    """Rewrite a safetensors header in place with `edit(header_dict)`, keeping the data bytes."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length :])


def test_folder_resolves(llama_family):
    parent = resolve_parent(str(llama_family["a"]))
    assert parent.kind == "folder"
    assert parent.sources[0]["file"] == "model.safetensors"
    assert len(parent.sources[0]["sha256"]) == 64


def test_checkpoint_reads_all_dtypes(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {
        "a.flag": torch.tensor([True, False, True]),  # 3 bytes: the next tensor starts unaligned
        "b.half": torch.arange(6, dtype=torch.float16).reshape(2, 3),
        "c.bf16": torch.linspace(-1, 1, 5, dtype=torch.bfloat16),
        "d.empty": torch.zeros(0, 4),
        "e.float": torch.randn(3, 2),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    (tmp_path / "config.json").write_text("{}")
    before = path.read_bytes()
    checkpoint = Checkpoint(tmp_path)
    for name, expected in tensors.items():
        got = checkpoint.get(name)
        assert got.dtype == expected.dtype, name
        assert got.shape == expected.shape, name
        assert torch.equal(got, expected), name
        if got.numel():
            got.zero_() if got.dtype != torch.bool else got.logical_not_()  # copy-on-write map
    assert path.read_bytes() == before
    assert all(torch.equal(load_file(path)[name], tensors[name]) for name in tensors)


def test_missing_shard(make_model, tmp_path):
    father = make_model("father", seed=1, shards=2)
    mother = make_model("mother", seed=2)
    (father / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ParentError, match=r"the index names shard model-00002-of-00002.safetensors, which is missing"):
        breed(father, mother, tmp_path / "child", settings=FAST)
    assert_nothing_written(tmp_path)


def test_stray_shard_warned_and_ignored(make_model):
    father = make_model("father", seed=1, shards=2)
    shutil.copy(father / "model-00001-of-00002.safetensors", father / "model-old.safetensors")
    with pytest.warns(DarwinWarning, match="ignoring model-old.safetensors, not listed in model.safetensors.index.json"):
        checkpoint = Checkpoint(father)
    assert all(info.file.name != "model-old.safetensors" for info in checkpoint.tensors.values())


def test_truncated_file(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2)
    path = father / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ParentError, match=r"model.safetensors: tensor .* ends at byte \d+ of the data section, but the file holds only \d+ data bytes; the file is truncated"):
        breed(father, mother, tmp_path / "child", settings=FAST)
    assert_nothing_written(tmp_path)


def test_header_length_past_end(make_model):
    father = make_model("father", seed=1)
    path = father / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    with pytest.raises(ParentError, match=r"header length \d+ bytes is larger than the file"):
        read_safetensors_header(path)


def test_header_shape_disagrees_with_bytes(make_model):
    father = make_model("father", seed=1)
    path = father / "model.safetensors"

    def edit(header):
        header["model.norm.weight"]["shape"] = [33]

    rewrite_header(path, edit)
    with pytest.raises(ParentError, match=r"tensor model.norm.weight is declared F32 \[33\] \(132 bytes\) but its byte range holds 128 bytes"):
        read_safetensors_header(path)


def test_header_dtype_disagrees_with_bytes(make_model):
    father = make_model("father", seed=1)
    path = father / "model.safetensors"

    def edit(header):
        header["model.norm.weight"]["dtype"] = "F64"

    rewrite_header(path, edit)
    with pytest.raises(ParentError, match=r"model.norm.weight is declared F64 \[32\] \(256 bytes\) but its byte range holds 128 bytes"):
        read_safetensors_header(path)


def test_mismatched_shapes(make_model, tmp_path):
    father = make_model("father", seed=1)
    mother = make_model("mother", seed=2, ffn=48)
    with pytest.raises(IncompatibleParentsError, match=r"model.layers.0.mlp.down_proj.weight: shape \(32, 64\) in the father .* but \(32, 48\) in the mother"):
        breed(father, mother, tmp_path / "child", settings=FAST)
    assert_nothing_written(tmp_path)


def test_different_layer_counts_align(make_model, tmp_path):
    """Parents of different depth are paired layer by layer in proportion; the child has the father's depth."""
    from safetensors.torch import load_file

    father = make_model("father", seed=1, layers=3)
    mother = make_model("mother", seed=2, layers=2)
    result = breed(father, mother, tmp_path / "child", settings=FAST)
    child = load_file(result.out / "model.safetensors")
    assert "model.layers.2.mlp.up_proj.weight" in child
    assert child.keys() == load_file(father / "model.safetensors").keys()


def test_bin_only_folder(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    torch.save({"weight": torch.zeros(2)}, folder / "pytorch_model.bin")
    with pytest.raises(ParentError, match=r"holds only pickled PyTorch weights \(pytorch_model.bin\).*safetensors or GGUF only.*save_pretrained"):
        resolve_parent(str(folder))


def test_unknown_embedded_name():
    with pytest.raises(ParentError, match=r"unknown embedded model 'tiny-nothing'; available: "):
        resolve_parent("embedded:tiny-nothing")


def test_missing_path():
    with pytest.raises(ParentError, match=r"parent './nowhere/model' not found"):
        resolve_parent("./nowhere/model")


def test_missing_config(make_model):
    father = make_model("father", seed=1)
    (father / "config.json").unlink()
    with pytest.raises(ParentError, match="config.json not found"):
        resolve_parent(str(father))


def test_unreadable_config(make_model):
    father = make_model("father", seed=1)
    (father / "config.json").write_text("{ broken")
    with pytest.raises(ParentError, match=r"config.json: invalid JSON at line 1"):
        resolve_parent(str(father))


def test_quantized_checkpoint_rejected(make_model):
    father = make_model("father", seed=1)
    config = json.loads((father / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (father / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParentError, match="declares a bitsandbytes-quantized checkpoint"):
        resolve_parent(str(father))


def test_remote_code_rejected(make_model):
    father = make_model("father", seed=1)
    config = json.loads((father / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomModel"}
    (father / "config.json").write_text(json.dumps(config))
    with pytest.raises(ParentError, match="trust_remote_code is never enabled"):
        resolve_parent(str(father))


def test_adapter_without_reachable_base(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone"), "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ParentError, match=r"the adapter's base .*gone.* cannot be used"):
        resolve_parent(str(folder))


def test_adapter_applied_to_base(llama_family, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(llama_family["base"]))
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(llama_family["base"])
    (adapter / "adapter_config.json").write_text(json.dumps(config))

    parent = resolve_parent(str(adapter))
    assert parent.kind == "adapter"
    merged = peft_model.merge_and_unload().state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(parent.checkpoint.get(name), merged[name])
    base_weights = Checkpoint(llama_family["base"])
    assert not torch.allclose(parent.checkpoint.get(name), base_weights.get(name))
    untouched = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(parent.checkpoint.get(untouched), base_weights.get(untouched))
    # A second resolution reuses the materialised folder.
    assert resolve_parent(str(adapter)).folder == parent.folder


def test_two_safetensors_without_index(make_model):
    father = make_model("father", seed=1)
    shutil.copy(father / "model.safetensors", father / "extra.safetensors")
    with pytest.raises(ParentError, match="2 safetensors files but no model.safetensors.index.json"):
        resolve_parent(str(father))


def test_gguf_magic_checked(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"NOTGGUF" * 10)
    with pytest.raises(ParentError, match="not a GGUF file"):
        resolve_parent(str(path))


def test_hub_id_unreachable():
    # conftest points the Hub endpoint at a closed loopback port.
    with pytest.raises(HubError, match="cannot download some-org/some-model"):
        resolve_parent("some-org/some-model")


def test_warnings_are_darwin_warnings(make_model):
    father = make_model("father", seed=1, shards=2)
    (father / "model-stray.safetensors").write_bytes((father / "model-00001-of-00002.safetensors").read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Checkpoint(father)
    assert any(issubclass(w.category, DarwinWarning) for w in caught)
