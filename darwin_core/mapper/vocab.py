"""Vocabulary alignment by token string, through both parents' tokenizers.

The child keeps the father's tokenizer, so its embedding and lm_head keep the father's row
count, padding rows included. A father row whose token the partner also has pairs with the
partner's row for that token string, wherever the partner stores it. Every other father row
keeps the father's values: a token the partner lacks, or a padding row without a token.
Tokens only the partner has have no row in the child.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..parents import TOKENIZER_FILES

logger = logging.getLogger(__name__)


@dataclass
class VocabularyAlignment:
    """Row pairing of the father's embedding with a partner's, and the counts the report shows."""

    father_rows: int
    partner_rows: int
    father_tokens: int
    partner_tokens: int
    shared: int
    father_only: int
    padding_rows: int
    partner_only: int
    moved: int
    source: list[int] = field(repr=False)

    @property
    def is_identity(self) -> bool:
        """True when row i pairs with row i for every father row, so no alignment is needed."""
        return self.father_rows == self.partner_rows and self.source == list(range(self.father_rows))

    def to_dict(self) -> dict:
        return {
            "father_rows": self.father_rows,
            "partner_rows": self.partner_rows,
            "father_tokens": self.father_tokens,
            "partner_tokens": self.partner_tokens,
            "shared": self.shared,
            "father_only": self.father_only,
            "padding_rows": self.padding_rows,
            "partner_only": self.partner_only,
            "moved": self.moved,
        }


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def same_tokenizer_files(first: Path, second: Path) -> bool:
    """True when both folders contain byte-identical tokenizer files, or neither contains any."""
    for name in TOKENIZER_FILES:
        a, b = Path(first) / name, Path(second) / name
        if a.is_file() != b.is_file():
            return False
        if a.is_file() and a.read_bytes() != b.read_bytes():
            return False
    return True


def load_vocabulary(folder: Path) -> dict[str, int] | None:
    """Token string to id, added tokens included, or None when the folder has no usable tokenizer."""
    if not has_tokenizer(folder):
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as error:
        logger.warning("cannot load the tokenizer in %s (%s); its rows are paired by index", folder, error)
        return None
    return dict(tokenizer.get_vocab())


def align_vocabularies(father: dict[str, int], partner: dict[str, int], father_rows: int, partner_rows: int) -> VocabularyAlignment:
    """Pair every father row with the partner row of the same token string, or -1 to keep the father's."""
    father_tokens = {token: index for token, index in father.items() if index < father_rows}
    partner_tokens = {token: index for token, index in partner.items() if index < partner_rows}
    token_of_row: dict[int, str] = {}
    for token in sorted(father_tokens):  # sorted, so a row named by two tokens resolves the same way on every run
        token_of_row.setdefault(father_tokens[token], token)

    source = []
    shared = father_only = padding = moved = 0
    for row in range(father_rows):
        token = token_of_row.get(row)
        if token is None:
            source.append(-1)
            padding += 1
        elif token in partner_tokens:
            source.append(partner_tokens[token])
            shared += 1
            moved += partner_tokens[token] != row
        else:
            source.append(-1)
            father_only += 1
    return VocabularyAlignment(
        father_rows=father_rows,
        partner_rows=partner_rows,
        father_tokens=len(father_tokens),
        partner_tokens=len(partner_tokens),
        shared=shared,
        father_only=father_only,
        padding_rows=padding,
        partner_only=len(set(partner_tokens) - set(father_tokens)),
        moved=moved,
        source=source,
    )
