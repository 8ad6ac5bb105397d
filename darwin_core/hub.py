"""Everything that talks to the Hugging Face Hub, and the only module that imports huggingface_hub.

Every Hub failure is translated into a `HubError` whose message names the repository and says
what to do; tokens are passed to huggingface_hub as arguments and never logged or formatted
into a message.
"""

import contextlib
import logging
from pathlib import Path

from .errors import HubError

logger = logging.getLogger(__name__)

# Files a parent needs: weights in safetensors form, the index, configs, tokenizer, chat
# template and PEFT adapter files. Pickled weights are never downloaded.
PARENT_PATTERNS = [
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "adapter_config.json",
    "README.md",
]


@contextlib.contextmanager
def translate_errors(repo_id: str, action: str):
    """Re-raise huggingface_hub errors as `HubError` with the repository and the next step."""
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError:
        # GatedRepoError subclasses RepositoryNotFoundError, so it must be caught first.
        raise HubError(
            f"{repo_id} is gated: accept its terms on its Hub page with your account, then pass a token "
            "(HF_TOKEN or the token field) that belongs to that account"
        ) from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{repo_id}: revision not found; check the branch, tag or commit after '@'") from None
    except errors.RepositoryNotFoundError:
        raise HubError(
            f"{repo_id} not found on the Hub, or it is private and no token with access was given; "
            "check the id, or pass a token (HF_TOKEN or the token field)"
        ) from None
    except errors.OfflineModeIsEnabled:
        raise HubError(
            f"cannot {action} {repo_id}: offline mode is on (HF_HUB_OFFLINE=1); only models already in the local cache can be used"
        ) from None
    except errors.LocalEntryNotFoundError:
        raise HubError(
            f"cannot {action} {repo_id}: the Hub cannot be reached and the model is not in the local cache; "
            "check the network connection or use a local folder"
        ) from None
    except errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(
                f"cannot {action} {repo_id}: the token is missing or has no permission (HTTP {status}); "
                "use a token with the needed access"
            ) from None
        if status == 429:
            raise HubError(f"cannot {action} {repo_id}: rate-limited by the Hub (HTTP 429); wait a minute and try again") from None
        if status is not None and status >= 500:
            raise HubError(f"cannot {action} {repo_id}: the Hub had a server error (HTTP {status}); try again later") from None
        raise HubError(f"cannot {action} {repo_id}: HTTP {status or 'error'} from the Hub") from None


def fetch_parent(repo_id: str, revision: str | None = None, token: str | None = None) -> tuple[Path, str]:
    """Download a parent's safetensors, configs and tokenizer; return the folder and the commit hash."""
    from huggingface_hub import snapshot_download

    with translate_errors(repo_id, "download"):
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=PARENT_PATTERNS, token=token))
    # The snapshot folder is named after the resolved commit, which pins the revision.
    return folder, folder.name


def render_model_card(metadata: dict, body: str) -> str:
    """Render a model card (YAML front matter and Markdown body) with `huggingface_hub.ModelCard`."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(**{key: value for key, value in metadata.items() if value is not None})
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))
