"""A fake Hugging Face Hub on 127.0.0.1 that the real huggingface_hub client talks to in tests.

It serves the requests huggingface_hub 2.4 sends for model search and info, file trees, file
resolve (HEAD, and GET with Range), auth checks, whoami, repository creation and deletion, YAML
validation, preupload and commit. Repositories live in memory and keep every commit, so a test
can pin an older revision.

Two choices keep the client on plain HTTP: resolve responses carry no `X-Xet-Hash` header, so
downloads are ordinary GETs, and preupload returns "regular" for every file, so the client sends
file contents inline (base64) in the commit payload and never needs the LFS or Xet protocols.

Every request is recorded. A GET of a `.safetensors` file counts as a weight read unless it has
a Range that starts inside the file's header: reading the header is what the client does to get
the safetensors metadata, and anything else fetches tensor data.
"""

import base64
import hashlib
import json
import re
import secrets
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
TIMESTAMP = "2026-01-01T00:00:00.000Z"
READ_ONLY_ROLES = ("read",)


def new_commit_oid() -> str:
    return secrets.token_hex(20)


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def safetensors_header(data: bytes) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where tensor data starts."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), 8 + length


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a model folder, by its path relative to the folder."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str = ""
    description: str = ""


@dataclass
class FakeRepo:
    repo_id: str
    commits: list[Commit]
    private: bool = False
    gated: str | bool = False  # False, "auto" or "manual", as the Hub reports it
    granted: set[str] = field(default_factory=set)  # users who accepted the gate
    card_data: dict = field(default_factory=dict)
    downloads: int = 0
    likes: int = 0
    library_name: str | None = "transformers"

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def revision(self, name: str) -> Commit | None:
        if name == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == name), None)

    def config(self, commit: Commit) -> dict:
        data = commit.files.get("config.json")
        return json.loads(data) if data else {}

    def tags(self) -> list[str]:
        """Tags the way the Hub derives them: library, formats, model type, license and base models."""
        files = self.head.files
        tags = [self.library_name] if self.library_name else []
        if any(name.endswith(".safetensors") for name in files):
            tags.append("safetensors")
        if any(name.endswith(".gguf") for name in files):
            tags.append("gguf")
        model_type = self.config(self.head).get("model_type")
        if model_type:
            tags.append(model_type)
        bases = self.card_data.get("base_model") or []
        relation = self.card_data.get("base_model_relation", "finetune")
        for base in [bases] if isinstance(bases, str) else bases:
            tags += [f"base_model:{base}", f"base_model:{relation}:{base}"]
        if self.card_data.get("license"):
            tags.append(f"license:{self.card_data['license']}")
        return tags

    def parameters(self, commit: Commit) -> dict | None:
        counts: dict[str, int] = {}
        for name, data in commit.files.items():
            if name.endswith(".safetensors"):
                header, _ = safetensors_header(data)
                for tensor, entry in header.items():
                    if tensor != "__metadata__":
                        count = 1
                        for size in entry["shape"]:
                            count *= size
                        counts[entry["dtype"]] = counts.get(entry["dtype"], 0) + count
        return {"parameters": counts, "total": sum(counts.values())} if counts else None

    def info(self, commit: Commit, blobs: bool = False) -> dict:
        config = self.config(commit)
        siblings = []
        for name, data in sorted(commit.files.items()):
            sibling = {"rfilename": name}
            if blobs:
                sibling.update(size=len(data), blobId=git_blob_oid(data))
                if name.endswith(".safetensors"):
                    sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": hashlib.md5(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.namespace,
            "sha": commit.oid,
            "lastModified": TIMESTAMP,
            "createdAt": TIMESTAMP,
            "private": self.private,
            "gated": self.gated,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "library_name": self.library_name,
            "tags": self.tags(),
            "pipeline_tag": "text-generation",
            "cardData": self.card_data or None,
            "config": {key: config[key] for key in ("architectures", "model_type") if key in config} or None,
            "safetensors": self.parameters(commit),
            "siblings": siblings,
        }


@dataclass
class RecordedRequest:
    method: str
    path: str  # path and query string, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int = 0
    weight_read: bool = False


@dataclass
class Failure:
    pattern: re.Pattern
    status: int
    error_code: str | None
    message: str


class ErrorResponse(Exception):
    """An error response: status, optional X-Error-Code and message."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code, self.headers = status, message, error_code, headers or {}


class FakeHub:
    """The in-memory Hub state, its request log and the HTTP server serving them."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.accounts: dict[str, dict] = {}  # token -> account
        self.requests: list[RecordedRequest] = []
        self.failures: list[Failure] = []
        self.max_page_size = 1000
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # --- setup used by tests ---

    def start(self) -> "FakeHub":
        hub = self

        class Handler(HubRequestHandler):
            state = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-hub", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, files: dict[str, bytes] | Path, **settings) -> FakeRepo:
        """Add a repository whose first commit contains `files` (a dict or a folder to read)."""
        files = folder_files(files) if isinstance(files, Path) else dict(files)
        card_data = settings.get("card_data") or {}
        if card_data and "README.md" not in files:
            files["README.md"] = f"---\n{yaml.safe_dump(card_data)}---\n\n# {repo_id}\n".encode()
        repo = FakeRepo(repo_id, [Commit(new_commit_oid(), {".gitattributes": GITATTRIBUTES, **files}, "initial commit")], **settings)
        with self.lock:
            self.repos[repo_id] = repo
        return repo

    def add_account(self, user: str, role: str = "write", orgs: dict[str, str] | None = None, scoped: list | None = None) -> str:
        """Register a user and return a fresh random token for it (tokens are never fixed strings)."""
        token = "hf_" + secrets.token_urlsafe(24)
        self.accounts[token] = {"name": user, "role": role, "orgs": orgs or {}, "scoped": scoped or []}
        return token

    def fail(self, pattern: str, status: int, error_code: str | None = None, message: str = "injected failure") -> None:
        """Fail every request whose "METHOD /path?query" matches `pattern` with this error status."""
        self.failures.append(Failure(re.compile(pattern), status, error_code, message))

    def weight_reads(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.weight_read]

    def paths(self, method: str | None = None) -> list[str]:
        return [request.path for request in self.requests if method is None or request.method == method]

    # --- access rules ---

    def account(self, headers: dict[str, str]) -> dict | None:
        authorization = headers.get("authorization", "")
        if not authorization:
            return None
        account = self.accounts.get(authorization.removeprefix("Bearer ").strip())
        if account is None:
            raise ErrorResponse(401, "Invalid credentials in Authorization header")
        return account

    def can_write(self, account: dict | None, namespace: str, repo_id: str | None = None) -> bool:
        if account is None or account["role"] in READ_ONLY_ROLES:
            return False
        if account["role"] == "fineGrained":
            return any(
                "repo.write" in scope["permissions"] and scope["entity"]["name"] in (namespace, repo_id) for scope in account["scoped"]
            )
        return namespace == account["name"] or account["orgs"].get(namespace) in ("write", "contributor", "admin")

    def readable_repo(self, repo_id: str, account: dict | None) -> FakeRepo:
        repo = self.repos.get(repo_id)
        visible = repo is not None and (
            not repo.private or (account is not None and (account["name"] == repo.namespace or repo.namespace in account["orgs"]))
        )
        if not visible:
            raise ErrorResponse(404 if account else 401, "Repository not found", "RepoNotFound")
        return repo

    def check_gate(self, repo: FakeRepo, account: dict | None) -> None:
        if repo.gated and not (account and (account["name"] in repo.granted or account["name"] == repo.namespace)):
            raise ErrorResponse(403 if account else 401, f"Access to model {repo.repo_id} is restricted.", "GatedRepo")

    def commit_of(self, repo: FakeRepo, revision: str) -> Commit:
        commit = repo.revision(unquote(revision))
        if commit is None:
            raise ErrorResponse(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit


def _page(hub: FakeHub, handler, items: list, params: dict, limit: int | None) -> tuple[list, dict]:
    """Cut one page out of `items`, with a Link header to the next page as the Hub sends it."""
    start = int(params.pop("cursor", ["0"])[0])
    size = min(limit or hub.max_page_size, hub.max_page_size)
    page = items[start : start + size]
    headers = {}
    if start + size < len(items):
        query = urlencode({**params, "cursor": [str(start + size)]}, doseq=True)
        headers["Link"] = f'<{hub.endpoint}{urlsplit(handler.path).path}?{query}>; rel="next"'
    return page, headers


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeHub

    def log_message(self, format, *args):  # the request log is `FakeHub.requests`
        pass

    def do_GET(self):
        self.handle_request("GET")

    def do_HEAD(self):
        self.handle_request("HEAD")

    def do_POST(self):
        self.handle_request("POST")

    def do_DELETE(self):
        self.handle_request("DELETE")

    # --- plumbing ---

    def handle_request(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        record = RecordedRequest(method, self.path, headers, body)
        hub = self.state
        with hub.lock:
            hub.requests.append(record)
        try:
            for failure in hub.failures:
                if failure.pattern.search(f"{method} {self.path}"):
                    extra = {"Retry-After": "7"} if failure.status == 429 else {}
                    raise ErrorResponse(failure.status, failure.message, failure.error_code, extra)
            status, payload, extra = self.route(method, urlsplit(self.path), headers, body, record)
        except ErrorResponse as error:
            status, extra = error.status, dict(error.headers)
            payload = json.dumps({"error": error.message}).encode()
            if error.error_code:
                extra["X-Error-Code"] = error.error_code
            extra["X-Error-Message"] = error.message
        record.status = status
        self.send(method, status, payload, extra)

    def send(self, method: str, status: int, payload, headers: dict) -> None:
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(payload))))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def route(self, method, url, headers, body, record):
        hub = self.state
        account = hub.account(headers)
        params = parse_qs(url.query, keep_blank_values=True)
        path = url.path

        if method == "GET" and path == "/api/whoami-v2":
            return self.whoami(account)
        if method == "GET" and path == "/api/models":
            return self.list_models(account, params)
        if method == "POST" and path == "/api/repos/create":
            return self.create_repo(account, json.loads(body))
        if method == "DELETE" and path == "/api/repos/delete":
            return self.delete_repo(account, json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return self.validate_yaml(json.loads(body))

        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree|auth-check|preupload|commit)(?:/(.*))?)?", path)
        if match:
            repo_id, action, rest = match.group(1), match.group(2), match.group(3) or ""
            if method == "GET" and action in (None, "revision"):
                return self.model_info(account, repo_id, rest or "main", params)
            if method == "GET" and action == "tree":
                return self.tree(account, repo_id, rest, params)
            if method == "GET" and action == "auth-check":
                return self.auth_check(account, repo_id, write=rest == "write")
            if method == "POST" and action == "preupload":
                return self.preupload(account, repo_id, rest, json.loads(body))
            if method == "POST" and action == "commit":
                return self.commit(account, repo_id, rest, body)

        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match and method in ("GET", "HEAD"):
            return self.resolve(account, match.group(1), match.group(2), unquote(match.group(3)), headers, record)
        raise ErrorResponse(404, f"no route for {method} {path}")

    # --- endpoints ---

    def whoami(self, account):
        if account is None:
            raise ErrorResponse(401, "Invalid credentials in Authorization header")
        access = {"displayName": "test token", "role": account["role"]}
        if account["role"] == "fineGrained":
            access["fineGrained"] = {"global": [], "scoped": account["scoped"]}
        return 200, {
            "type": "user",
            "name": account["name"],
            "orgs": [{"type": "org", "name": name, "roleInOrg": role} for name, role in account["orgs"].items()],
            "auth": {"type": "access_token", "accessToken": access},
        }, {}

    def list_models(self, account, params):
        hub = self.state
        search = (params.get("search") or [""])[0].lower()
        required_tags = set(params.get("filter") or [])
        author = (params.get("author") or [None])[0]
        found = []
        for repo in list(hub.repos.values()):
            try:
                hub.readable_repo(repo.repo_id, account)
            except ErrorResponse:
                continue
            if search in repo.repo_id.lower() and required_tags <= set(repo.tags()) and author in (None, repo.namespace):
                info = repo.info(repo.head)
                info.pop("siblings")
                found.append(info)
        sort = (params.get("sort") or [None])[0]
        if sort in ("downloads", "likes"):
            found.sort(key=lambda info: -info[sort])
        limit = int(params["limit"][0]) if "limit" in params else None
        page, headers = _page(hub, self, found, dict(params), limit)
        return 200, page, headers

    def model_info(self, account, repo_id, revision, params):
        hub = self.state
        repo = hub.readable_repo(repo_id, account)
        commit = hub.commit_of(repo, revision)
        return 200, repo.info(commit, blobs=(params.get("blobs") or [""])[0].lower() == "true"), {}

    def tree(self, account, repo_id, rest, params):
        hub = self.state
        repo = hub.readable_repo(repo_id, account)
        revision, _, folder = rest.partition("/")
        commit = hub.commit_of(repo, revision)
        entries = []
        for name, data in sorted(commit.files.items()):
            if folder and not name.startswith(unquote(folder) + "/"):
                continue
            entry = {"type": "file", "oid": git_blob_oid(data), "size": len(data), "path": name}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        page, headers = _page(hub, self, entries, dict(params), None)
        return 200, page, headers

    def auth_check(self, account, repo_id, write):
        hub = self.state
        repo = hub.readable_repo(repo_id, account)
        hub.check_gate(repo, account)
        if write and not hub.can_write(account, repo.namespace, repo_id):
            raise ErrorResponse(403, "You don't have write access to this repository")
        return 200, {}, {}

    def resolve(self, account, repo_id, revision, filename, headers, record):
        hub = self.state
        repo = hub.readable_repo(repo_id, account)
        hub.check_gate(repo, account)
        commit = hub.commit_of(repo, revision)
        if filename not in commit.files:
            raise ErrorResponse(404, f"Entry not found: {filename}", "EntryNotFound")
        data = commit.files[filename]
        etag = hashlib.sha256(data).hexdigest() if filename.endswith(".safetensors") else git_blob_oid(data)
        response = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if record.method == "HEAD":
            response["Content-Length"] = str(len(data))
            return 200, b"", response

        start, end, status = 0, len(data) - 1, 200
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("range", ""))
        if byte_range:
            start = int(byte_range.group(1))
            end = min(int(byte_range.group(2)), len(data) - 1) if byte_range.group(2) else len(data) - 1
            status = 206
            response["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if filename.endswith(".safetensors"):
            _, data_start = safetensors_header(data)
            record.weight_read = byte_range is None or start >= data_start
        return status, data[start : end + 1], response

    def create_repo(self, account, payload):
        hub = self.state
        if account is None:
            raise ErrorResponse(401, "You must be authenticated to create a repository")
        namespace = payload.get("organization") or account["name"]
        repo_id = f"{namespace}/{payload['name']}"
        if not hub.can_write(account, namespace, repo_id):
            raise ErrorResponse(403, f"You don't have the rights to create a model under the namespace {namespace}")
        url = f"{hub.endpoint}/{repo_id}"
        if repo_id in hub.repos:
            raise ErrorResponse(409, "You already created this model repo")
        repo = FakeRepo(repo_id, [Commit(new_commit_oid(), {".gitattributes": GITATTRIBUTES}, "initial commit")],
                        private=payload.get("visibility") == "private", library_name=None)
        with hub.lock:
            hub.repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id}, {}

    def delete_repo(self, account, payload):
        hub = self.state
        namespace = payload.get("organization") or (account or {}).get("name")
        repo_id = f"{namespace}/{payload['name']}"
        repo = hub.readable_repo(repo_id, account)
        if not hub.can_write(account, repo.namespace, repo_id):
            raise ErrorResponse(403, "You don't have the rights to delete this repository")
        with hub.lock:
            del hub.repos[repo_id]
        return 200, {}, {}

    def validate_yaml(self, payload):
        content = payload.get("content", "")
        if content.startswith("---"):
            try:
                yaml.safe_load(content.split("---", 2)[1])
            except yaml.YAMLError as error:
                raise ErrorResponse(400, f"invalid YAML in the model card: {error}")
        return 200, {"errors": [], "warnings": []}, {}

    def _writable_repo(self, account, repo_id) -> FakeRepo:
        hub = self.state
        repo = hub.readable_repo(repo_id, account)
        if not hub.can_write(account, repo.namespace, repo_id):
            raise ErrorResponse(403, "You don't have write access to this repository")
        return repo

    def preupload(self, account, repo_id, revision, payload):
        repo = self._writable_repo(account, repo_id)
        commit = self.state.commit_of(repo, revision)
        files = []
        for entry in payload["files"]:
            existing = commit.files.get(entry["path"])
            files.append({
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(existing) if existing is not None else None,
            })
        return 200, {"files": files, "commitOid": commit.oid}, {}

    def commit(self, account, repo_id, revision, body):
        hub = self.state
        repo = self._writable_repo(account, repo_id)
        parent = hub.commit_of(repo, revision)
        files = dict(parent.files)
        summary = description = ""
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary, description = value["summary"], value.get("description", "")
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise ErrorResponse(400, f"the fake Hub does not accept {item['key']} operations")
        commit = Commit(new_commit_oid(), files, summary, description)
        with hub.lock:
            repo.commits.append(commit)
        return 200, {"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{commit.oid}", "commitOid": commit.oid, "pullRequestUrl": None}, {}


# --- helpers shared by the Hub test modules ---

FAMILY = {"base": "darwin-test/base", "a": "darwin-test/math-tune", "b": "darwin-test/code-tune"}
LICENSE = "apache-2.0"


def use_as_default(hub: FakeHub, monkeypatch, cache_dir: Path) -> None:
    """Point huggingface_hub's default endpoint and cache at this fake Hub and a test folder.

    huggingface_hub reads HF_ENDPOINT and HF_HUB_CACHE once, at import, into `constants`, and
    looks the constants up on every call, so patching them covers calls made without `endpoint=`.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))


def add_family(hub: FakeHub, folders: dict[str, Path]) -> dict[str, FakeRepo]:
    """Publish a small Llama base and its two fine-tunes, with cards declaring the base."""
    return {
        "base": hub.add_repo(FAMILY["base"], folders["base"], card_data={"license": LICENSE}, downloads=300, likes=5),
        "a": hub.add_repo(FAMILY["a"], folders["a"], card_data={"license": LICENSE, "base_model": FAMILY["base"]}, downloads=200, likes=30),
        "b": hub.add_repo(FAMILY["b"], folders["b"], card_data={"license": LICENSE, "base_model": FAMILY["base"]}, downloads=100, likes=40),
    }
