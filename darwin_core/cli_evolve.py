"""`darwin evolve` and `darwin lineage`."""

import os

from .choices import PRESET_NAMES


def _suites(values: list[str] | None) -> tuple[tuple[str, float], ...] | None:
    if not values:
        return None
    pairs = []
    for value in values:
        name, _, weight = value.partition("=")
        try:
            pairs.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"--suite expects NAME or NAME=WEIGHT, got {value!r}") from None
    return tuple(pairs)


def cmd_evolve(args) -> None:
    from .breed import BreedSettings, as_parent, default_suites
    from .cli import _emit, _family_weights, _genome_from_args, _mapper_settings
    from .evolve import EvolveSettings, ablate_trust, evolve
    from .mri import MriSettings

    if args.lm_eval_include:
        os.environ["DARWIN_LM_EVAL_INCLUDE"] = args.lm_eval_include
    if args.allow_pickle:
        # Convert pickled local parents once up front; the search then reads the safetensors copies.
        from .breed import prepare

        father, mother, base, _ = prepare(args.father, args.mother, args.base, _mapper_settings(args), allow_pickle=True)
        args.father, args.mother, args.base = father, mother, base
    start, _ = _genome_from_args(args)
    suites = _suites(args.suite)
    if suites is None:
        family = default_suites(as_parent(args.father))
        if not family:
            raise ValueError("no default suite for these parents; pass --suite NAME (a file in assets/evals or a .jsonl path)")
        suites = tuple((name, 1.0) for name in family)
    settings = EvolveSettings(
        population=args.population, generations=args.generations, sigma=args.sigma, seed=args.seed,
        space=args.space, frozen=tuple(args.freeze or ()), suites=suites, max_items=args.max_items,
        time_budget=args.time_budget, candidate_budget=args.candidate_budget,
        backend=args.backend, ray_address=args.ray_address, ray_workers=args.ray_workers,
    )
    breed_settings = BreedSettings(
        seed=args.seed, mapper=_mapper_settings(args), mri=MriSettings(family_weights=_family_weights(args.family_weight))
    )

    if args.ablate_trust:
        rows = ablate_trust(args.father, args.mother, args.out, base=args.base, start=start, settings=settings,
                            breed_settings=breed_settings, quiet=args.quiet)
        lines = ["run                trust   search   test (mean)"]
        lines += [f"{r['run']:<18} {r['mri_trust']:.3f}   {r['search_fitness']:.3f}    {r['test_mean']:.3f}" for r in rows]
        _emit(args, {"ablation": rows}, "\n".join(lines))
        return

    result, child = evolve(
        args.father, args.mother, args.out, base=args.base, start=start, settings=settings,
        breed_settings=breed_settings, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet,
    )
    summary = {
        **child.summary(),
        "stopped": result.stopped,
        "best_fitness": result.best.fitness,
        "best_genome": result.genome.to_dict(),
        "candidates": len(result.candidates),
        "history": result.history,
    }
    lines = [f"best search fitness {result.best.fitness:.4f} after {len(result.candidates)} candidates ({result.stopped})"]
    # Counted from 1, as in the studio. The index in evolution.json stays 0-based.
    lines += [f"generation {r['generation'] + 1}: best {r['best']:.4f}, mean {r['mean']:.4f}" for r in result.history]
    lines.append(f"child written to {child.out} (health {summary['health']['verdict']})")
    for suite in (summary.get("eval") or {}).get("suites", []):
        for row in suite["results"]:
            lines.append(f"{suite['suite']}/test: {row['model']}: {row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
    _emit(args, summary, "\n".join(lines))


def cmd_lineage(args) -> None:
    from dataclasses import asdict

    from .cli import _emit
    from .lineage import format_tree, lineage

    nodes = lineage(args.child)
    _emit(args, {"nodes": [asdict(node) for node in nodes]}, format_tree(nodes))


def add_evolve_commands(commands, common, parent_options) -> None:
    evolve = commands.add_parser("evolve", help="search the genome with CMA-ES, then breed and test the best child")
    parent_options(evolve)
    evolve.add_argument("--out", required=True, help="folder for the best child; the search state goes to OUT.evolution/")
    evolve.add_argument("--genome", help="start genome JSON (default: the balanced genome)")
    evolve.add_argument("--preset", choices=PRESET_NAMES, help="start from a named preset")
    evolve.add_argument("--population", type=int, default=8, help="candidates per generation (default 8)")
    evolve.add_argument("--generations", type=int, default=10, help="generations (default 10)")
    evolve.add_argument("--sigma", type=float, default=0.2, help="initial CMA-ES step size in gene units (default 0.2)")
    evolve.add_argument("--seed", type=int, default=0, help="seed of CMA-ES, DARE masks and item sampling (default 0)")
    evolve.add_argument("--space", choices=("genome", "layers"), default="genome",
                        help="genome: the 14 genes; layers: one attention and one FFN ratio per layer plus trust")
    evolve.add_argument("--freeze", action="append", metavar="GENE", help="keep this gene at its start value (repeatable)")
    evolve.add_argument("--suite", action="append", metavar="NAME[=WEIGHT]", help="fitness suite and weight (repeatable); default: the family's suites")
    evolve.add_argument("--lm-eval-include", help="folder of local lm-evaluation-harness YAML tasks for lm_eval:TASK suites")
    evolve.add_argument("--max-items", type=int, help="score candidates on at most this many search items per suite (fixed sample)")
    evolve.add_argument("--time-budget", type=float, help="stop the search after this many seconds")
    evolve.add_argument("--candidate-budget", type=int, help="stop the search after this many candidates")
    evolve.add_argument("--family-weight", action="append", metavar="FAMILY=WEIGHT", help="weight of a probe family in the MRI")
    evolve.add_argument("--backend", choices=("local", "ray"), default="local", help="evaluate candidates in-process (default) or on Ray")
    evolve.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    evolve.add_argument("--ray-workers", type=int, default=2, help="Ray workers for a local cluster (default 2)")
    evolve.add_argument("--resume", action="store_true", help="continue the run saved in OUT.evolution/")
    evolve.add_argument("--ablate-trust", action="store_true", help="run three times: trust fixed at 0, learned, fixed at 1")
    evolve.add_argument("--overwrite", action="store_true", help="replace an earlier Darwin child at --out")
    from .cli import add_mapper_options

    add_mapper_options(evolve)
    common(evolve)
    evolve.set_defaults(handler=cmd_evolve)

    lineage = commands.add_parser("lineage", help="print a child's family tree from the darwin.json records")
    lineage.add_argument("child", help="child folder")
    common(lineage)
    lineage.set_defaults(handler=cmd_lineage)
