"""A Ray run and an in-process run with the same seed find the same best genome and scores."""

import json

import numpy as np
import pytest
import torch

from darwin_core.breed import BreedSettings
from darwin_core.evolve import Evolution, EvolveSettings

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    path = tmp_path_factory.mktemp("suite") / "letters.jsonl"
    rng = np.random.default_rng(1)
    lines = []
    for split in ("search", "test"):
        for index in range(16):
            first, second = rng.choice(list("abcdefghij"), size=2, replace=False)
            lines.append(json.dumps({"id": f"{split}-{index}", "split": split, "kind": "choice", "prompt": f"{first}{second}=",
                                     "choices": [first, second], "answer": index % 2}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_ray_matches_in_process(llama_family, suite, monkeypatch):
    from darwin_core.ray_backend import RayBackend

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    settings = EvolveSettings(population=4, generations=2, sigma=0.3, seed=5, suites=((suite, 1.0),), backend="ray", ray_workers=2)
    breed_settings = BreedSettings(seed=5, run_health=False, eval_suites=())

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors use one thread each; match them for bit-equal scores
    try:
        local = Evolution(llama_family["a"], llama_family["b"], settings=settings, breed_settings=breed_settings).run()
    finally:
        torch.set_num_threads(previous_threads)

    evolution = Evolution(llama_family["a"], llama_family["b"], settings=settings, breed_settings=breed_settings)
    backend = RayBackend(evolution, workers=2)
    try:
        remote = evolution.run(evaluate_batch=backend.evaluate_batch)
    finally:
        backend.close()

    assert [c.fitness for c in remote.candidates] == [c.fitness for c in local.candidates]
    assert remote.best.genome == local.best.genome
    assert remote.history[-1]["best_so_far"] == local.history[-1]["best_so_far"]
