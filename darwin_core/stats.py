"""Uncertainty of small evaluation suites: Wilson intervals and the exact paired sign test."""

from dataclasses import asdict, dataclass


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """Return the 95% Wilson score interval of `correct / total`, or (0, 1) when total is 0."""
    if total == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest  # imported on use: scipy takes a while, and a bare breed never needs it

    interval = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    return (float(interval.low), float(interval.high))


@dataclass(frozen=True)
class PairedResult:
    """Item-by-item comparison of a model against a reference on the same items.

    `wins` counts items the model gets right and the reference wrong, `losses` the reverse.
    `p_value` is the exact two-sided binomial test on the discordant items (McNemar's exact
    test), so it ignores the items both get right or both get wrong.
    """

    model: str
    against: str
    wins: int
    losses: int
    ties: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(model: str, correct: list[bool], against: str, reference: list[bool]) -> PairedResult:
    """Compare two per-item correctness lists scored on the same items in the same order."""
    if len(correct) != len(reference):
        raise ValueError(
            f"cannot pair {model} ({len(correct)} items) with {against} ({len(reference)} items): "
            "score both models on the same suite and split"
        )
    wins = sum(1 for ours, theirs in zip(correct, reference) if ours and not theirs)
    losses = sum(1 for ours, theirs in zip(correct, reference) if theirs and not ours)
    ties = len(correct) - wins - losses
    discordant = wins + losses
    from scipy.stats import binomtest

    p_value = 1.0 if discordant == 0 else float(binomtest(wins, discordant, 0.5).pvalue)
    return PairedResult(model=model, against=against, wins=wins, losses=losses, ties=ties, p_value=p_value)


def format_p(p_value: float) -> str:
    """Format a p-value for tables and logs with three significant digits, so 3.6e-17 does not print as 0.0000."""
    return f"{p_value:.3g}"
