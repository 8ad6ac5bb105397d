"""Hub subcommands of the `darwin` CLI: search, siblings, preflight and push.

The token comes from the HF_TOKEN environment variable only, never from an argument, so it stays
out of shell history and process listings.
"""

def _table(headers: list[str], rows: list[list]) -> str:
    """Format rows as left-aligned text columns under a header line."""
    cells = [headers] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def cmd_search(args) -> None:
    from . import hub
    from .cli import _emit

    model_type = hub.father_model_type(args.like_father) if args.like_father else None
    if args.cached or hub.is_offline():
        models = hub.cached_models(args.text, model_type=model_type)
        source = "local cache"
    else:
        models = hub.search_models(
            args.text,
            model_type=model_type,
            base_model=args.base_model,
            safetensors_only=not args.any_format,
            sort=args.sort,
            limit=args.limit,
            page=args.page,
        )
        source = "Hub"
    data = {"source": source, "model_type": model_type, "page": args.page, "models": [model.to_dict() for model in models]}
    text = _table(hub.MODEL_TABLE_HEADERS, [model.to_row() for model in models]) if models else f"no models found ({source})"
    _emit(args, data, text)


def cmd_siblings(args) -> None:
    from . import hub
    from .cli import _emit

    siblings = hub.find_siblings(args.repo_id, limit=args.limit)
    lines = [
        f"father: {siblings.father}",
        f"declared base (use as --base): {siblings.base}" if siblings.base else "declared base: none (the father is the DARE base)",
    ]
    if siblings.models:
        lines += ["", _table(hub.MODEL_TABLE_HEADERS, [model.to_row() for model in siblings.models])]
    else:
        lines.append("no fine-tunes of the same base found")
    _emit(args, siblings.to_dict(), "\n".join(lines))


def cmd_preflight(args) -> None:
    from . import hub
    from .cli import _emit
    from .outputs import format_bytes

    report = hub.preflight(args.father, args.mother, args.base, mode=args.mode, out_dir=args.out)
    compatibility = report.compatibility
    lines = []
    for role, check in (("father", report.father), ("mother", report.mother), ("base", report.base)):
        if check is not None:
            summary = check.summary
            lines.append(
                f"{role}: {check.ref} at {check.revision or 'local files'} ({summary.architecture}, {summary.num_layers} layers, "
                f"{summary.parameter_count:,} parameters, license {check.license or 'unknown'})"
            )
    lines += [
        f"same family: {compatibility.same_family}; compatibility score {compatibility.score:.3f}; "
        f"matched tensors: {compatibility.matched}; compatible: {'yes' if compatibility.compatible else 'no'}",
        f"download: {format_bytes(report.download_bytes)}"
        + (f" ({format_bytes(report.disk_free_bytes)} free in the Hub cache)" if report.disk_free_bytes is not None else ""),
        f"memory for the {report.mode} breed: about {format_bytes(report.memory_needed_bytes)}"
        + (f" ({format_bytes(report.memory_available_bytes)} available)" if report.memory_available_bytes is not None else ""),
    ]
    lines += [f"problem: {problem}" for problem in report.problems]
    _emit(args, report.to_dict(), "\n".join(lines))
    report.require_ok()


def cmd_push(args) -> None:
    from . import hub
    from .cli import _emit

    url = hub.push_child(args.child_dir, args.repo, private=args.private, keep_empty_repo=args.keep_empty_repo)
    _emit(args, {"url": url, "private": args.private}, f"pushed to {url}")


def add_hub_commands(commands, common) -> None:
    """Register the Hub subcommands on `commands`; `common(sub)` adds --json and --quiet."""
    search = commands.add_parser("search", help="search Hub models to use as parents (or list the local Hub cache)")
    search.add_argument("text", nargs="?", default="", help="text the model id must contain (default: any)")
    search.add_argument("--like-father", metavar="REF", help="only models of the same model_type as this parent")
    search.add_argument("--base-model", metavar="ID", help="only models whose card declares this base model")
    search.add_argument("--sort", default="downloads", choices=["downloads", "likes"], help="order of the results (default downloads)")
    search.add_argument("--limit", type=int, default=20, help="models per page (default 20)")
    search.add_argument("--page", type=int, default=0, help="page number, from 0 (default 0)")
    search.add_argument("--any-format", action="store_true", help="also list models without safetensors weights")
    search.add_argument("--cached", action="store_true", help="list models in the local Hub cache instead (no network)")
    common(search)
    search.set_defaults(handler=cmd_search)

    siblings = commands.add_parser("siblings", help="list fine-tunes of a father's base: candidate mothers and the DARE base")
    siblings.add_argument("repo_id", metavar="REPO_ID", help="Hub id of the father")
    siblings.add_argument("--limit", type=int, default=50, help="maximum number of models to list (default 50)")
    common(siblings)
    siblings.set_defaults(handler=cmd_siblings)

    preflight = commands.add_parser(
        "preflight", help="check two parents from config.json and safetensors headers, before downloading any weight"
    )
    preflight.add_argument("father", help="parent A: Hub id[@revision], folder, .gguf file or embedded:NAME")
    preflight.add_argument("mother", help="parent B, same forms as the father")
    preflight.add_argument("--base", help="common ancestor to check against both parents")
    preflight.add_argument("--mode", default="streaming", choices=["streaming", "memory"], help="breed mode to size memory for (default streaming)")
    preflight.add_argument("--out", help="folder the child will be written to, to check its free disk space")
    common(preflight)
    preflight.set_defaults(handler=cmd_preflight)

    push = commands.add_parser("push", help="upload a child folder to a Hub model repository (token from HF_TOKEN)")
    push.add_argument("child_dir", metavar="CHILD_DIR", help="child folder written by darwin breed")
    push.add_argument("--repo", required=True, help="repository id, org/name, or a name under the token's account")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--keep-empty-repo", action="store_true", help="keep a repository this push created even if the upload fails")
    common(push)
    push.set_defaults(handler=cmd_push)
