"""Pair a father's tensors with a partner's through canonical slots, aligned depths and vocabularies.

Resolution is father-first: the child has the father's architecture, so every decision is made
per father tensor, in sorted name order, from names, shapes and configs alone. Nothing depends
on the order of tensors in the files, on shard boundaries or on Python's hash seed.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..choices import CROSSBREED_MODES
from ..compat import check_parents
from ..errors import DarwinError
from ..inventory import Component, build_inventory, count_layers, proportional_layer_map
from ..mapping import Partner, Piece, RowMap, TensorMapping
from ..plan import Action
from .families import (
    CONVENTION_FIELDS,
    KNOWN_FAMILIES,
    CanonicalPart,
    canonical_parts,
    family_of,
    rope_settings,
    text_config,
    value_convention,
)
from .report import SAMPLE_SIZE, ComponentMatch, MatchError, MatchReport, ShapeMismatch
from .vocab import VocabularyAlignment, align_vocabularies, load_vocabulary, same_tokenizer_files

logger = logging.getLogger(__name__)

# Components an FFN crossbreed blends; every other father tensor stays the father's.
_CROSSBREED_COMPONENTS = {"ffn": (Component.FFN, Component.ROUTER)}
_VOCABULARY_ROLES = ("embed", "lm_head")


@dataclass(frozen=True)
class MapperSettings:
    """Settings of the Architecture Mapper for parents of different layouts.

    `min_match` is the minimum share of the counted father tensors that must find a same-shape
    partner before breeding starts. `crossbreed="ffn"` keeps the father's attention, mixers,
    embeddings and norms and blends only the FFN and router tensors; then only those count.
    """

    min_match: float = 0.8
    crossbreed: str | None = None

    def __post_init__(self):
        if not 0.0 <= self.min_match <= 1.0:
            raise DarwinError(f"min_match must be in [0, 1], got {self.min_match}")
        if self.crossbreed is not None and self.crossbreed not in CROSSBREED_MODES:
            raise DarwinError(f"unknown crossbreed mode {self.crossbreed!r}; modes are {', '.join(CROSSBREED_MODES)}")


@dataclass
class Layout:
    """A parent's tensors by canonical slot."""

    ref: str
    folder: Path
    config: dict
    family: str
    num_layers: int
    shapes: dict[str, tuple[int, ...]]
    parts: dict[str, list[CanonicalPart]]
    slots: dict[tuple[str, int | None], tuple[str, CanonicalPart]]
    stores_both_tied: bool = False

    @classmethod
    def of(cls, parent) -> "Layout":
        config = parent.config
        shapes = {name: tuple(info.shape) for name, info in parent.checkpoint.tensors.items()}
        parts = {name: canonical_parts(name, shapes[name], config) for name in sorted(shapes)}
        slots: dict[tuple[str, int | None], tuple[str, CanonicalPart]] = {}
        for name in sorted(parts):  # the first name in sorted order wins a slot claimed twice
            for part in parts[name]:
                slots.setdefault((part.key, part.layer), (name, part))

        # A parent that ties its output layer to the embedding stores no lm_head. Its output
        # weights are the embedding rows, read under the lm_head convention of its family.
        stores_both_tied = False
        embedding = slots.get(("embed.weight", None))
        if embedding is not None:
            if ("lm_head.weight", None) not in slots:
                name, part = embedding
                slots[("lm_head.weight", None)] = (name, CanonicalPart("lm_head.weight", None, None, part.shape))
            else:
                stores_both_tied = bool(text_config(config).get("tie_word_embeddings", False))

        return cls(
            ref=parent.ref,
            folder=Path(parent.folder),
            config=config,
            family=family_of(config),
            num_layers=count_layers(sorted(shapes), text_config(config)),
            shapes=shapes,
            parts=parts,
            slots=slots,
            stores_both_tied=stores_both_tied,
        )


@dataclass
class Pairing:
    """Partners of the father's tensors in one other parent, with what did not pair."""

    partners: dict[str, Partner] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    mismatches: list[ShapeMismatch] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    layer_map: list[int] | None = None
    vocabulary: VocabularyAlignment | None = None
    renamed: int = 0
    converted: int = 0
    split_or_joined: int = 0


def _vocabulary(father: Layout, partner: Layout) -> VocabularyAlignment | None:
    """Row alignment of the two embeddings by token string, or None when a tokenizer is missing."""
    father_embedding = father.slots.get(("embed.weight", None))
    partner_embedding = partner.slots.get(("embed.weight", None))
    if father_embedding is None or partner_embedding is None:
        return None
    father_rows, partner_rows = father_embedding[1].shape[0], partner_embedding[1].shape[0]
    if father_rows == partner_rows and same_tokenizer_files(father.folder, partner.folder):
        return None
    father_vocabulary, partner_vocabulary = load_vocabulary(father.folder), load_vocabulary(partner.folder)
    if father_vocabulary is None or partner_vocabulary is None:
        return None
    alignment = align_vocabularies(father_vocabulary, partner_vocabulary, father_rows, partner_rows)
    return None if alignment.is_identity else alignment


def pair_layouts(father: Layout, partner: Layout) -> Pairing:
    """Find each father tensor's partner: same canonical slot, proportionally aligned layer, same shape."""
    pairing = Pairing()
    if father.num_layers and partner.num_layers and father.num_layers != partner.num_layers:
        pairing.layer_map = proportional_layer_map(father.num_layers, partner.num_layers)
    pairing.vocabulary = _vocabulary(father, partner)

    for name in sorted(father.parts):
        parts = father.parts[name]
        pieces: list[Piece] = []
        rows: RowMap | None = None
        status = "matched"
        for part in parts:
            layer = part.layer
            if layer is not None and pairing.layer_map is not None:
                layer = pairing.layer_map[layer] if layer < len(pairing.layer_map) else None
            found = partner.slots.get((part.key, layer)) if layer is not None or part.layer is None else None
            if found is None:
                status = "shape_mismatched" if status == "shape_mismatched" else "unmatched"
                continue
            partner_name, partner_part = found
            vocabulary = pairing.vocabulary
            aligns_rows = (
                vocabulary is not None
                and part.role in _VOCABULARY_ROLES
                and len(parts) == 1
                and part.shape[0] == vocabulary.father_rows
                and partner_part.shape[0] == vocabulary.partner_rows
                and partner_part.shape[1:] == part.shape[1:]
            )
            if partner_part.shape != part.shape and not aligns_rows:
                status = "shape_mismatched"
                pairing.mismatches.append(ShapeMismatch(name, part.shape, partner_name, partner_part.shape))
                continue
            if aligns_rows:
                rows = RowMap(list(vocabulary.source))
            father_scale, father_offset = value_convention(part, father.config)
            partner_scale, partner_offset = value_convention(partner_part, partner.config)
            # Father-convention value = (partner stored * partner scale + partner offset - father offset) / father scale.
            pieces.append(
                Piece(
                    partner_name,
                    partner_part.rows,
                    partner_scale / father_scale,
                    (partner_offset - father_offset) / father_scale,
                )
            )

        pairing.status[name] = status
        if status != "matched":
            continue
        assembled = Partner(tuple(pieces), rows)
        pairing.partners[name] = assembled
        pairing.used.update(piece.name for piece in pieces)
        pairing.renamed += assembled.name != name
        pairing.converted += any(piece.scale != 1.0 or piece.offset != 0.0 for piece in pieces)
        pairing.split_or_joined += len(pieces) > 1 or any(piece.rows is not None for piece in pieces)
    return pairing


def _notes(father: Layout, mother: Layout, pairing: Pairing) -> list[str]:
    notes = []
    for layout in (father, mother):
        if layout.family not in KNOWN_FAMILIES:
            notes.append(f"no family rules for model type {layout.family!r} ({layout.ref}); its tensors pair by their Llama-style names")
    if pairing.layer_map is not None:
        notes.append(
            f"depths differ ({father.num_layers} father layers, {mother.num_layers} mother layers): father layer l pairs "
            f"with mother layer floor((l + 0.5) * {mother.num_layers} / {father.num_layers})"
        )
    father_text, mother_text = text_config(father.config), text_config(mother.config)
    for key in CONVENTION_FIELDS:
        # A field one config leaves out takes its class default, which the headers cannot tell.
        if key in father_text and key in mother_text:
            if father_text[key] != mother_text[key]:
                notes.append(f"{key} differs (father {father_text.get(key)!r}, mother {mother_text.get(key)!r}); the child keeps the father's")
    father_rope, mother_rope = rope_settings(father.config), rope_settings(mother.config)
    if father_rope and mother_rope and father_rope != mother_rope:
        notes.append(f"rope settings differ (father {father_rope}, mother {mother_rope}); the child keeps the father's")
    vocabulary = pairing.vocabulary
    if vocabulary is not None:
        notes.append(
            f"vocabularies differ: {vocabulary.shared} shared tokens pair by token string ({vocabulary.moved} at another id "
            f"in the mother), {vocabulary.father_only} father-only tokens and {vocabulary.padding_rows} padding rows keep "
            f"the father's rows, {vocabulary.partner_only} mother-only tokens are not in the child"
        )
    else:
        father_embedding, mother_embedding = father.slots.get(("embed.weight", None)), mother.slots.get(("embed.weight", None))
        if father_embedding and mother_embedding and father_embedding[1].shape[0] != mother_embedding[1].shape[0]:
            notes.append("embedding row counts differ and a tokenizer is missing, so the rows cannot be aligned by token string")
    if father.stores_both_tied:
        notes.append("the father ties lm_head to the embedding but stores both; both stay the father's so the child stays tied")
    return notes


def resolve(father, mother, base=None, settings: MapperSettings = MapperSettings()) -> tuple[TensorMapping, MatchReport]:
    """Pair the parents and build the mapping and its report, without raising `MatchError` for a low match."""
    father_layout, mother_layout = Layout.of(father), Layout.of(mother)
    pairing = pair_layouts(father_layout, mother_layout)
    base_pairing = pair_layouts(father_layout, Layout.of(base)) if base is not None else None
    inventory = build_inventory(father.checkpoint.tensors, father.config)

    blended_components = _CROSSBREED_COMPONENTS.get(settings.crossbreed)
    components: dict[str, ComponentMatch] = {}
    forced: dict[str, tuple[Action, str]] = {}
    counted = counted_matched = 0
    for name in sorted(inventory):
        component = inventory[name].component
        status = pairing.status[name]
        counts = components.setdefault(component.value, ComponentMatch())
        setattr(counts, status, getattr(counts, status) + 1)
        if blended_components is None or component in blended_components:
            counted += 1
            counted_matched += status == "matched"

        if blended_components is not None and component not in blended_components:
            forced[name] = (Action.TRANSPLANT_A, f"FFN crossbreed keeps the father's {component.value} tensors")
        elif status == "shape_mismatched":
            forced[name] = (Action.TRANSPLANT_A, "the mother's partner has another shape; kept from the father")
        elif status == "unmatched":
            forced[name] = (Action.TRANSPLANT_A, "no partner in the mother; kept from the father")
    if father_layout.stores_both_tied:
        for key in ("embed.weight", "lm_head.weight"):
            name = father_layout.slots[(key, None)][0]
            forced[name] = (Action.TRANSPLANT_A, "the father ties lm_head to the embedding and stores both; both stay equal")

    compatibility = check_parents(father, mother)
    unmatched_names = [name for name in sorted(pairing.status) if pairing.status[name] == "unmatched"]
    report = MatchReport(
        father=father.ref,
        mother=mother.ref,
        base=base.ref if base is not None else None,
        father_family=father_layout.family,
        mother_family=mother_layout.family,
        father_layers=father_layout.num_layers,
        mother_layers=mother_layout.num_layers,
        layer_map=pairing.layer_map,
        components={key: components[key] for key in sorted(components)},
        compatibility_score=compatibility.score,
        min_match=settings.min_match,
        crossbreed=settings.crossbreed,
        counted=counted,
        counted_matched=counted_matched,
        renamed=pairing.renamed,
        converted=pairing.converted,
        split_or_joined=pairing.split_or_joined,
        shape_mismatches=pairing.mismatches[:SAMPLE_SIZE],
        unmatched_names=unmatched_names[:SAMPLE_SIZE],
        mother_unused=sorted(set(mother_layout.shapes) - pairing.used)[:SAMPLE_SIZE],
        vocabulary=pairing.vocabulary.to_dict() if pairing.vocabulary else None,
        base_matched=len(base_pairing.partners) if base_pairing is not None else None,
        notes=_notes(father_layout, mother_layout, pairing),
    )
    if base_pairing is not None and len(base_pairing.partners) < len(inventory):
        report.notes.append(
            f"{len(inventory) - len(base_pairing.partners)} father tensors have no partner in the base; "
            "their task vectors are taken relative to the father"
        )
    mapping = TensorMapping(
        mother=pairing.partners,
        base=base_pairing.partners if base_pairing is not None else {},
        forced=forced,
        report=report,
        layer_map=pairing.layer_map,
    )
    return mapping, report


def match_parents(father, mother, base=None, settings: MapperSettings = MapperSettings()) -> MatchReport:
    """Return the match report of resolved parents for display before breeding, without raising `MatchError`."""
    return resolve(father, mother, base, settings)[1]


def build_mapping(father, mother, base=None, settings: MapperSettings = MapperSettings()) -> TensorMapping:
    """Pair resolved parents of any layout; raises `MatchError` with the report when too little matched."""
    mapping, report = resolve(father, mother, base, settings)
    if not report.passed:
        raise MatchError(report)
    logger.info(
        "matched %d of %d father tensors of %s with %s (%d renamed, %d converted)",
        report.matched, report.total, father.ref, mother.ref, report.renamed, report.converted,
    )
    return mapping


def same_vocabulary(father, *others) -> bool:
    """True when every other parent's tokenizer maps the same strings to the same ids as the father's."""
    for other in others:
        if other is None or same_tokenizer_files(Path(father.folder), Path(other.folder)):
            continue
        father_vocabulary, other_vocabulary = load_vocabulary(Path(father.folder)), load_vocabulary(Path(other.folder))
        if father_vocabulary is not None and other_vocabulary is not None and father_vocabulary != other_vocabulary:
            return False
    return True
