"""Per-session state of the studio, kept in `gr.State` and closed when the session ends."""

import logging
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

logger = logging.getLogger(__name__)

# Child folders of every session live under this root, one temporary folder per session.
SESSIONS_ROOT = Path(os.environ.get("DARWIN_SESSIONS_DIR", Path(tempfile.gettempdir()) / "darwin-studio-sessions"))


@dataclass
class Session:
    """What one browser session has loaded and bred. Never shared between sessions."""

    workdir: Path
    father_ref: str | None = None
    mother_ref: str | None = None
    base_ref: str | None = None
    parents: tuple | None = None
    compatibility: object | None = None
    breedable: bool = False  # the checked parents pair up, by name or through the Architecture Mapper
    mapping: object | None = None
    mapper_settings: object | None = None
    mri: object | None = None
    child: Path | None = None
    record: dict | None = None
    health: object | None = None
    models: dict = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)
    evolution: object | None = None
    last_evolution: Path | None = None  # output of the latest search, which "Resume last run" continues
    evolving: str | None = None  # "search" or "ablation" while one runs
    children_bred: int = 0
    closed: bool = False
    active_jobs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls) -> "Session":
        from darwin_core.mapper import MapperSettings

        SESSIONS_ROOT.mkdir(parents=True, exist_ok=True)
        return cls(workdir=Path(tempfile.mkdtemp(prefix="session-", dir=SESSIONS_ROOT)), mapper_settings=MapperSettings())

    def parents_changed(self, father: str | None, mother: str | None, base: str | None) -> bool:
        return (father, mother, base) != (self.father_ref, self.mother_ref, self.base_ref)

    def reset_parents(self, father: str | None, mother: str | None, base: str | None) -> None:
        """Forget everything derived from the previous parents."""
        self.father_ref, self.mother_ref, self.base_ref = father, mother, base
        self.parents = self.compatibility = self.mapping = self.mri = None
        self.breedable = False
        self.models.clear()

    def next_child_folder(self) -> Path:
        self.children_bred += 1
        return self.workdir / f"child-{self.children_bred}"

    def load_model(self, key: str, folder: Path):
        """Load a model once per session (father, mother, child) for chat and evaluation."""
        from darwin_core.modeling import load_model

        cached = self.models.get(key)
        if cached is None or cached[0] != folder:
            model, tokenizer = load_model(folder)
            cached = (folder, model, tokenizer)
            self.models[key] = cached
        return cached[1], cached[2]

    @contextmanager
    def job(self):
        """Mark a step that writes into the session folder. A closed session rejects new steps.

        Closing the page cancels a running step, and the folder is removed when that step ends.
        Removing it earlier let a search or an ablation write children into the deleted folder,
        where they were left behind.
        """
        with self._lock:
            if self.closed:
                raise gr.Error("This session was closed. Reload the page to start a new one.")
            self.active_jobs += 1
        try:
            yield
        finally:
            with self._lock:
                self.active_jobs -= 1
                remove = self.closed and self.active_jobs == 0
            if remove:
                self._remove_files()

    def close(self) -> None:
        """Cancel the running step, free loaded models and delete this session's files (at once,
        or when the running step ends)."""
        self.cancel.set()
        self.models.clear()
        with self._lock:
            self.closed = True
            busy = self.active_jobs > 0
        if busy:
            logger.info("session closing: %s is removed when its running step stops", self.workdir)
        else:
            self._remove_files()

    def _remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        logger.info("session closed, removed %s", self.workdir)


def close_session(session: "Session | None") -> None:
    """`gr.State` delete callback: runs when the session's state expires."""
    if session is not None:
        session.close()


# Open sessions by Gradio session hash, so the page-unload event can close a session at once.
# Gradio keeps the state of a closed page for an hour before its delete callback runs.
_OPEN: dict[str, Session] = {}
_OPEN_LOCK = threading.Lock()


def register(session_hash: str | None, session: Session) -> None:
    if session_hash:
        with _OPEN_LOCK:
            _OPEN[session_hash] = session


def close_request(request: gr.Request) -> None:
    """`demo.unload` handler: free the models and files of the session whose page closed."""
    with _OPEN_LOCK:
        session = _OPEN.pop(getattr(request, "session_hash", None), None)
    if session is not None:
        session.close()
