"""The `darwin` command line: inspect, mri, breed, eval, health (and the later subcommands).

Heavy libraries are imported inside the subcommands, so `darwin --help` starts fast. Results go
to stdout (one JSON object with `--json`), logs and progress bars to stderr. A user error exits
with status 1 and a one-line reason.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .choices import CROSSBREED_MODES, MERGE_METHODS, PRESET_NAMES, SPLITS

logger = logging.getLogger("darwin_core.cli")

EXIT_ERROR = 1


def _emit(args, data: dict, text: str) -> None:
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(text.rstrip() + "\n")


# --- subcommands ----------------------------------------------------------------------------


def cmd_inspect(args) -> None:
    from .breed import verify_child
    from .compat import check_parents, summarize_parent
    from .parents import resolve_parent

    parents = [resolve_parent(ref) for ref in args.refs]
    base = resolve_parent(args.base) if args.base else None
    if len(parents) == 1:
        parent = parents[0]
        summary = summarize_parent(parent).to_dict()
        problems = verify_child(parent.folder) if parent.lineage else []
        data = {"parent": summary, "generation": parent.generation, "checksum_problems": problems}
        lines = [f"{key}: {value}" for key, value in summary.items()]
        if parent.lineage:
            lines.append(f"generation: {parent.generation}")
            lines.append("checksums: " + ("ok" if not problems else "; ".join(problems)))
        _emit(args, data, "\n".join(lines))
        if problems:
            raise SystemExit(EXIT_ERROR)
        return
    if len(parents) != 2:
        raise ValueError("inspect takes one reference (a summary) or two (a compatibility report)")
    report = check_parents(parents[0], parents[1], base)
    data = report.to_dict()
    lines = [
        f"father: {report.father.ref} ({report.father.model_type}, {report.father.num_layers} layers, {report.father.parameter_count:,} parameters)",
        f"mother: {report.mother.ref} ({report.mother.model_type}, {report.mother.num_layers} layers, {report.mother.parameter_count:,} parameters)",
        f"same family: {report.same_family}; compatibility score {report.score:.3f}",
        f"matched tensors: {report.matched}; shape mismatches: {len(report.shape_mismatched)}; "
        f"only in father: {len(report.only_father)}; only in mother: {len(report.only_mother)}",
        "same-family merge: " + ("yes, every tensor pairs up" if report.compatible else "no; the mapper below pairs the parents across layouts"),
    ]
    if not report.compatible or args.crossbreed:
        from .mapper import match_parents

        match = match_parents(parents[0], parents[1], base, _mapper_settings(args))
        data["match"] = match.to_dict()
        lines += match_lines(match)
    _emit(args, data, "\n".join(lines))


def match_lines(match) -> list[str]:
    """Format the Architecture Mapper's report as text lines for `darwin inspect`."""
    lines = [
        f"mapper: {match.counted_matched} of {match.counted} counted father tensors pair with the mother "
        f"({match.match_fraction:.0%}, min_match {match.min_match:.0%}): " + ("breedable" if match.passed else "too few to breed"),
        "component   matched  shape-mismatched  unmatched",
    ]
    lines += [
        f"{component:<10}  {counts.matched:7d}  {counts.shape_mismatched:16d}  {counts.unmatched:9d}"
        for component, counts in match.components.items()
    ]
    lines += [f"shape mismatch: {m.father_name} {tuple(m.father_shape)} vs {m.mother_name} {tuple(m.mother_shape)}" for m in match.shape_mismatches]
    lines += [f"no partner: {name}" for name in match.unmatched_names]
    lines += [f"note: {note}" for note in match.notes]
    if not match.passed and match.crossbreed is None:
        lines.append("hint: --crossbreed ffn keeps the father's attention and mixers and blends only the FFNs")
    return lines


def _family_weights(pairs: list[str] | None) -> dict[str, float]:
    weights = {}
    for pair in pairs or []:
        family, _, value = pair.partition("=")
        try:
            weights[family] = float(value)
        except ValueError:
            raise ValueError(f"--family-weight expects FAMILY=NUMBER, got {pair!r}") from None
    return weights


def cmd_mri(args) -> None:
    from .breed import prepare
    from .mri import MriSettings, scan

    father, mother, base, mapping = prepare(args.father, args.mother, args.base, _mapper_settings(args), allow_pickle=args.allow_pickle)
    settings = MriSettings(family_weights=_family_weights(args.family_weight), probes_folder=args.probes)
    report = scan(father, mother, base, settings, quiet=args.quiet, mapping=mapping)
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_dict(), indent=2))
    summary = report.summary()
    probe_a, probe_b = report.probe_scores()
    data = {**summary, "probe_a": probe_a, "probe_b": probe_b, "num_tensors": len(report.tensors)}
    lines = [f"mean r_MRI: {summary['mean_ratio']:.3f}"]
    lines += [f"  {component}: {value:.3f}" for component, value in summary["by_component"].items()]
    lines.append("layer  probe(father)  probe(mother)")
    lines += [f"{layer:5d}  {a:13.3f}  {b:13.3f}" for layer, (a, b) in enumerate(zip(probe_a, probe_b))]
    _emit(args, data, "\n".join(lines))


def _mapper_settings(args):
    from .mapper import MapperSettings

    return MapperSettings(min_match=args.min_match, crossbreed=args.crossbreed)


def _breed_settings(args):
    from .breed import BreedSettings
    from .mri import MriSettings
    from .plan import PlanSettings

    plan = PlanSettings(
        method=args.method,
        ratio=args.ratio,
        density=args.density,
        normalize=args.normalize,
        transplant_low=args.transplant_low,
        transplant_high=args.transplant_high,
    )
    suites = None if args.eval_suite is None else tuple(args.eval_suite)
    if args.no_eval:
        suites = ()
    return BreedSettings(
        seed=args.seed,
        plan=plan,
        mapper=_mapper_settings(args),
        mri=MriSettings(family_weights=_family_weights(args.family_weight)),
        max_shard_bytes=int(args.max_shard_mb * 1024 * 1024),
        eval_suites=suites,
        eval_split=args.split,
        run_health=not args.no_health,
        allow_nonfinite_parents=args.allow_nonfinite,
    )


def _genome_from_args(args):
    from .genome import PRESETS, Genome, load_genome, load_layer_ratios

    if args.genome:
        return load_genome(args.genome), load_layer_ratios(args.genome)
    if args.preset:
        return PRESETS[args.preset], None
    return Genome(), None


def cmd_breed(args) -> None:
    from .breed import breed

    genome, layers = _genome_from_args(args)
    result = breed(
        args.father,
        args.mother,
        args.out,
        base=args.base,
        genome=genome,
        layers=layers,
        settings=_breed_settings(args),
        overwrite=args.overwrite,
        quiet=args.quiet,
        allow_pickle=args.allow_pickle,
    )
    summary = result.summary()
    plan = summary["plan"]
    lines = [
        f"child written to {result.out}",
        f"plan: {plan['transplant_a']} from father, {plan['transplant_b']} from mother, {plan['blended']} blended",
        f"health: {summary['health']['verdict']}",
    ]
    for suite in (summary.get("eval") or {}).get("suites", []):
        for row in suite["results"]:
            lines.append(f"{suite['suite']}/{suite['split']}: {row['model']}: {row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
    _emit(args, summary, "\n".join(lines))


def cmd_eval(args) -> None:
    from .evaluate import load_suite, suite_report
    from .stats import format_p
    from .harness import is_harness_suite
    from .modeling import load_model
    from .parents import resolve_parent
    from .quick import parent_score, score_suite

    if args.lm_eval_include:
        os.environ["DARWIN_LM_EVAL_INCLUDE"] = args.lm_eval_include
    if not is_harness_suite(args.suite):
        load_suite(args.suite, args.split)  # fail fast on a bad suite before loading any model
    named = []
    for ref in args.refs:
        parent = resolve_parent(ref)
        if parent.lineage is None:
            named.append((ref, parent_score(parent, args.suite, args.split, quiet=args.quiet)))
        else:
            model, tokenizer = load_model(parent.folder)
            named.append((ref, score_suite(model, tokenizer, args.suite, args.split, quiet=args.quiet)))
    report = suite_report(args.suite, args.split, named)
    lines = [f"suite {args.suite}, split {args.split}"]
    for row in report["results"]:
        lines.append(f"  {row['model']}: {row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] n={row['n']}")
    for paired in report["paired"]:
        lines.append(
            f"  {paired['model']} vs {paired['against']}: {paired['wins']} wins, {paired['losses']} losses, p={format_p(paired['p_value'])}"
        )
    _emit(args, report, "\n".join(lines))


def cmd_health(args) -> None:
    from .breed import BreedSettings
    from .parents import resolve_parent
    from .quick import child_health

    child = resolve_parent(args.child)
    lineage = child.lineage or {}
    father_ref = args.father or (lineage.get("parents", {}).get("father") or {}).get("ref")
    mother_ref = args.mother or (lineage.get("parents", {}).get("mother") or {}).get("ref")
    if not father_ref or not mother_ref:
        raise ValueError(f"{args.child} has no darwin.json naming its parents; pass --father and --mother")
    report = child_health(child.folder, resolve_parent(father_ref), resolve_parent(mother_ref), None, [], BreedSettings(), quiet=args.quiet)
    lines = [f"verdict: {report.verdict}"] + [f"- {reason}" for reason in report.reasons]
    lines.append("layer  child  father  mother  flagged")
    lines += [f"{r['layer']:5d}  {r['child']:.3f}  {r['father']:.3f}  {r['mother']:.3f}  {'yes' if r['flagged'] else ''}" for r in report.layers]
    _emit(args, report.to_dict(), "\n".join(lines))
    if report.verdict == "failed":
        raise SystemExit(EXIT_ERROR)


# --- parser ---------------------------------------------------------------------------------


def add_mapper_options(sub) -> None:
    """Options of the Architecture Mapper, shared by breed, evolve and inspect."""
    sub.add_argument(
        "--crossbreed", choices=CROSSBREED_MODES,
        help="ffn: keep the father's attention, mixers, embeddings and norms and blend only the FFNs (parents of different families)",
    )
    sub.add_argument(
        "--min-match", type=float, default=0.8,
        help="minimum share of the father's tensors (its FFN tensors with --crossbreed ffn) that must pair with the mother (default 0.8)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darwin",
        description="Darwin Studio: breed, scan, evaluate and evolve merged language models without training.",
    )
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub):
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.add_argument("--quiet", action="store_true", help="hide progress bars and info logs")

    def parent_options(sub, required=True):
        sub.add_argument("--father", required=required, help="parent A: folder, .gguf file, adapter folder, embedded:NAME or Hub id")
        sub.add_argument("--mother", required=required, help="parent B, same forms as --father")
        sub.add_argument("--base", help="common ancestor of both parents (the DARE-TIES base); default: the father")
        sub.add_argument("--allow-pickle", action="store_true",
                         help="convert local folders that hold only pickled .bin weights (only for checkpoints you trust)")

    inspect = commands.add_parser("inspect", help="summarise a parent or a child, or report whether two parents can be merged")
    inspect.add_argument("refs", nargs="+", metavar="REF", help="one reference, or father and mother")
    inspect.add_argument("--base", help="also check this base against the parents")
    add_mapper_options(inspect)
    common(inspect)
    inspect.set_defaults(handler=cmd_inspect)

    mri = commands.add_parser("mri", help="scan both parents: static tensor statistics and per-layer probe influence")
    parent_options(mri)
    mri.add_argument("--family-weight", action="append", metavar="FAMILY=WEIGHT", help="weight of a probe family (default 1 each)")
    mri.add_argument("--probes", help="folder of probe texts (*.txt) instead of the shipped ones")
    mri.add_argument("--out", help="also write the full MRI report as JSON to this file")
    add_mapper_options(mri)
    common(mri)
    mri.set_defaults(handler=cmd_mri)

    breed = commands.add_parser("breed", help="breed a child of two parents into a new model folder")
    parent_options(breed)
    breed.add_argument("--out", required=True, help="folder for the child (must not exist unless --overwrite)")
    breed.add_argument("--genome", help="genome JSON file (14 named genes); default: the balanced genome")
    breed.add_argument("--preset", choices=PRESET_NAMES, help="named genome preset (ignored with --genome)")
    breed.add_argument("--seed", type=int, default=0, help="seed of the DARE masks (default 0)")
    breed.add_argument("--method", default="darwin", choices=MERGE_METHODS, help="darwin (default) or a fixed-recipe method")
    breed.add_argument("--ratio", type=float, default=0.5, help="mother share for fixed-recipe methods (default 0.5)")
    breed.add_argument("--density", type=float, default=1.0, help="keep fraction for fixed-recipe ties and DARE (default 1)")
    breed.add_argument("--normalize", action="store_true", help="fixed-recipe ties/DARE/task arithmetic: divide by the agreeing weights")
    breed.add_argument("--transplant-low", type=float, default=0.15, help="copy from the father below this ratio (default 0.15)")
    breed.add_argument("--transplant-high", type=float, default=0.85, help="copy from the mother above this ratio (default 0.85)")
    breed.add_argument("--family-weight", action="append", metavar="FAMILY=WEIGHT", help="weight of a probe family in the MRI")
    breed.add_argument("--eval-suite", action="append", help="quick-eval suite to run (repeatable); default: the family's suites")
    breed.add_argument("--no-eval", action="store_true", help="skip the quick eval")
    breed.add_argument("--no-health", action="store_true", help="skip the health check")
    breed.add_argument("--split", default="test", choices=SPLITS, help="suite split for the quick eval (default test)")
    breed.add_argument("--max-shard-mb", type=float, default=2048, help="largest weight file in MiB before sharding (default 2048)")
    breed.add_argument("--overwrite", action="store_true", help="replace an earlier Darwin child at --out")
    breed.add_argument("--allow-nonfinite", action="store_true",
                       help="breed even when a parent tensor holds NaN or Inf values (the health check then fails)")
    add_mapper_options(breed)
    common(breed)
    breed.set_defaults(handler=cmd_breed)

    evaluate = commands.add_parser("eval", help="quick eval of models on a suite; the last model is compared with each other one")
    evaluate.add_argument("refs", nargs="+", metavar="REF", help="models to score (put the child last)")
    evaluate.add_argument("--suite", required=True, help="suite name in assets/evals, a .jsonl path, or lm_eval:TASK for an lm-evaluation-harness task")
    evaluate.add_argument("--lm-eval-include", help="folder of local lm-evaluation-harness YAML tasks")
    evaluate.add_argument("--split", default="test", choices=SPLITS, help="split to score (default test)")
    common(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    health = commands.add_parser("health", help="compare a child's layer profile with its parents'")
    health.add_argument("child", help="child folder")
    health.add_argument("--father", help="default: the father named in the child's darwin.json")
    health.add_argument("--mother", help="default: the mother named in the child's darwin.json")
    common(health)
    health.set_defaults(handler=cmd_health)

    from .cli_more import add_more_commands

    add_more_commands(commands, common, parent_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.captureWarnings(True)
    # huggingface_hub prints its warnings (retries, for example) with a handler of its own.
    # Passing them on to the root handler too printed each of them twice.
    logging.getLogger("huggingface_hub").propagate = False

    from .errors import DarwinError

    try:
        args.handler(args)
    except (DarwinError, ValueError, FileNotFoundError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        sys.stderr.write(f"darwin {args.command}: error: {message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"darwin {args.command}: interrupted\n")
        return 130
    return 0


def run() -> None:
    """Console entry point of `darwin` and `python -m darwin_core`: run the command, then end the
    process without finalising the interpreter.

    Tearing down an interpreter that imported torch took 0.4 to 0.6 s after a breed of SmolLM2
    (measured from the end of `main` to the end of the process), a quarter of the whole command.
    The exit handlers still run first (logging, Ray, temporary folders), and the commands close
    the files they write before `main` returns (a `with` block or `write_text` in each case).
    """
    import atexit

    code = main()
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # CPython; elsewhere exit normally
    if run_exit_handlers is None:
        sys.exit(code)
    run_exit_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):  # a closed pipe or stream has nothing left to write
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
