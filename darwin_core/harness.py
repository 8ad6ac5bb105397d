"""lm-evaluation-harness tasks as quick-eval suites, scored on an in-memory model.

A suite named `lm_eval:TASK` runs the harness task TASK through its Python API on the model
object (no copy to disk). The task's documents are split by index parity so search and test
never share items: even indices form the `search` split, odd ones the `test` split. Local YAML
tasks are found in DARWIN_LM_EVAL_INCLUDE (a folder) or the folder passed as `include_path`;
the common benchmarks below work wherever their datasets can be downloaded.
"""

import logging
import os

from .errors import SuiteError
from .evaluate import SuiteScore

logger = logging.getLogger(__name__)

PREFIX = "lm_eval:"
COMMON_BENCHMARKS: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "winogrande",
    "mmlu",
    "gsm8k",
    "gpqa_diamond_zeroshot",
    "truthfulqa_mc2",
)
# Per-sample metrics that mean "this item is right", in order of preference.
_ITEM_METRICS = ("acc_norm", "acc", "exact_match")


def is_harness_suite(name: str) -> bool:
    return str(name).startswith(PREFIX)


def _task_manager(include_path: str | None):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SuiteError("lm-evaluation-harness suites need lm-eval: pip install 'lm-eval==0.4.13'") from None
    include = include_path or os.environ.get("DARWIN_LM_EVAL_INCLUDE")
    return TaskManager(include_path=include) if include else TaskManager()


def _split_indices(task, split: str, max_items: int | None, seed: int) -> list[int]:
    import numpy as np

    count = len(list(task.eval_docs))
    indices = [i for i in range(count) if i % 2 == (0 if split == "search" else 1)]
    if max_items is not None and len(indices) > max_items:
        chosen = np.random.default_rng(seed).permutation(len(indices))[:max_items]
        indices = sorted(indices[i] for i in chosen)
    return indices


class HarnessSuite:
    """One harness task bound to a split; build once, then `score(model, tokenizer)` per model."""

    def __init__(self, name: str, split: str, *, include_path: str | None = None, max_items: int | None = None, seed: int = 0):
        self.name = name
        self.task_name = name[len(PREFIX) :] if is_harness_suite(name) else name
        self.split = split
        self.task_manager = _task_manager(include_path)
        try:
            from lm_eval.tasks import get_task_dict

            task = get_task_dict([self.task_name], self.task_manager)[self.task_name]
        except KeyError:
            raise SuiteError(
                f"unknown lm-evaluation-harness task {self.task_name!r}; common ones: {', '.join(COMMON_BENCHMARKS)}, "
                "or a local YAML task in DARWIN_LM_EVAL_INCLUDE"
            ) from None
        except Exception as error:  # dataset download failures come in many types
            raise SuiteError(
                f"lm-evaluation-harness task {self.task_name!r} cannot be loaded ({type(error).__name__}: {error}); "
                "its dataset may be unreachable from this machine. Use a local task in DARWIN_LM_EVAL_INCLUDE."
            ) from None
        self.indices = _split_indices(task, split, max_items, seed)
        if not self.indices:
            raise SuiteError(f"lm-evaluation-harness task {self.task_name!r} has no documents in the {split} split")

    def score(self, model, tokenizer, batch_size: int = 16) -> SuiteScore:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = simple_evaluate(
            model=lm,
            tasks=[self.task_name],
            task_manager=self.task_manager,
            samples={self.task_name: self.indices},
            log_samples=True,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
        samples = sorted(results["samples"][self.task_name], key=lambda sample: sample["doc_id"])
        correct = []
        for sample in samples:
            metric = next((key for key in _ITEM_METRICS if key in sample), None)
            if metric is None:
                raise SuiteError(f"task {self.task_name!r} reports none of the per-item metrics {', '.join(_ITEM_METRICS)}")
            correct.append(float(sample[metric]) >= 1.0)
        return SuiteScore(
            item_ids=[f"{self.task_name}-{sample['doc_id']}" for sample in samples],
            skills=[self.task_name] * len(samples),
            correct=correct,
        )
