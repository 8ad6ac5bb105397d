"""Build and launch the studio."""

import logging
import os

import gradio as gr

from .layout import CSS, build_demo

# At most this many heavy jobs (scan, breed, evolve, chat, push) run at once across all sessions;
# others wait in the queue, which shows each user their position.
HEAVY_JOBS = int(os.environ.get("DARWIN_HEAVY_JOBS", "1"))
QUEUE_SIZE = int(os.environ.get("DARWIN_QUEUE_SIZE", "64"))


def create_app() -> gr.Blocks:
    demo = build_demo()
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=HEAVY_JOBS)
    return demo


def launch(**overrides) -> None:
    """Start the server; GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (set on Spaces) take precedence."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # huggingface_hub logs through a handler of its own, so passing its records on printed them twice.
    logging.getLogger("huggingface_hub").propagate = False
    options = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "theme": gr.themes.Soft(),
        "css": CSS,
        "show_error": True,
    }
    options.update(overrides)
    create_app().launch(**options)
