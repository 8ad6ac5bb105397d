"""Architecture Mapper: pair parents of different families, depths and vocabularies.

`build_mapping` returns the `TensorMapping` a breed reads partners through. It raises
`MatchError` with the `MatchReport` when too little matched. `match_parents` returns the report
alone, for display before breeding.
"""

from .families import HYBRID_FAMILIES, KNOWN_FAMILIES, TRANSFORMER_FAMILIES, canonical_parts
from .report import ComponentMatch, MatchError, MatchReport, ShapeMismatch
from .resolve import CROSSBREED_MODES, MapperSettings, build_mapping, match_parents, resolve, same_vocabulary

__all__ = [
    "CROSSBREED_MODES",
    "HYBRID_FAMILIES",
    "KNOWN_FAMILIES",
    "TRANSFORMER_FAMILIES",
    "ComponentMatch",
    "MapperSettings",
    "MatchError",
    "MatchReport",
    "ShapeMismatch",
    "build_mapping",
    "canonical_parts",
    "match_parents",
    "resolve",
    "same_vocabulary",
]
