"""Evaluate a generation's candidates on Ray: one actor per worker, parents shipped once.

The evaluation context (parent tensors, MRI ratios, tokenizer, search items) is put in Ray's
object store once per run; each actor builds its own reusable model from it and scores the
candidates it is sent. Candidates are deterministic, so a Ray run and an in-process run with the
same seed give the same scores, provided both use the same number of torch threads per
evaluation (Ray gives each actor one CPU and one thread).

A local cluster started here listens on 127.0.0.1 only, without the dashboard or usage stats;
`address` joins an existing cluster instead (for several GPUs or machines).
"""

import logging
import os

from .errors import DarwinError

logger = logging.getLogger(__name__)


def _import_ray(local: bool):
    if local:
        # Ray treats a single Linux machine as a possible cluster node and binds every interface;
        # this switch (meant for laptops) makes it use and bind 127.0.0.1 only. Ray reads it at
        # import time, so it must be set before the first import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise DarwinError("the Ray backend needs Ray: pip install 'ray>=2.40' (or use the default local backend)") from None
    return ray


class RayBackend:
    def __init__(self, evolution, address: str | None = None, workers: int = 2, gpus_per_worker: float = 0.0):
        ray = _import_ray(local=address is None)
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
                self.started_here = True
        context_ref = ray.put(evolution.context())

        @ray.remote(num_cpus=1, num_gpus=gpus_per_worker)
        class CandidateActor:
            def __init__(self, context):
                import torch

                from darwin_core.candidates import CandidateEvaluator

                torch.set_num_threads(1)
                self.evaluator = CandidateEvaluator(context)

            def evaluate(self, vector, generation, index):
                return self.evaluator.evaluate(vector, generation, index)

        self.actors = [CandidateActor.remote(context_ref) for _ in range(workers)]
        logger.info("Ray backend: %d workers%s", workers, f" on {address}" if address else " on a local cluster")

    def evaluate_batch(self, vectors, generation: int, cancel=None):
        """Score one generation across the actors; results come back in the order of `vectors`."""
        if cancel is not None and cancel.is_set():
            return []
        futures = [
            self.actors[index % len(self.actors)].evaluate.remote(list(map(float, vector)), generation, index)
            for index, vector in enumerate(vectors)
        ]
        return self.ray.get(futures)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started_here:
            self.ray.shutdown()
