"""Confinement of folder paths typed into the studio.

On a shared server one user must not read another user's files or the server's: when
DARWIN_ALLOWED_ROOTS is set (folders separated by the OS path separator), typed paths must
resolve inside one of those roots or inside the session's own folder. On a Hugging Face Space
(SPACE_ID set) with no roots configured, only the session's own folder is allowed. Locally,
with neither variable set, any path is allowed.
"""

import os
from pathlib import Path

import gradio as gr


def allowed_roots() -> list[Path] | None:
    """Configured roots, an empty list on a Space without configuration, or None for no limit."""
    configured = os.environ.get("DARWIN_ALLOWED_ROOTS")
    if configured:
        return [Path(root).expanduser().resolve() for root in configured.split(os.pathsep) if root]
    if os.environ.get("SPACE_ID"):
        return []
    return None


def check_user_path(path: str, session_dir: Path | None = None, must_exist: bool = True) -> Path:
    """Resolve a typed path (symbolic links followed) and reject it outside the allowed roots."""
    resolved = Path(path).expanduser().resolve()
    roots = allowed_roots()
    if roots is not None:
        permitted = roots + ([session_dir.resolve()] if session_dir is not None else [])
        if not any(resolved == root or root in resolved.parents for root in permitted):
            raise gr.Error(f"{path} is outside the folders this server allows; use a path under {', '.join(map(str, permitted)) or 'your session folder'}.")
    if must_exist and not resolved.exists():
        raise gr.Error(f"{path} not found.")
    return resolved
