"""A loopback HTTP server that plays the Hugging Face Hub well enough for huggingface_hub's download and search APIs.

It serves local folders as model repos, so tests exercise the real hub code paths (``snapshot_download``,
``hf_hub_download``, ``DiffusionPipeline.from_pretrained(repo_id)``, ``HfApi.list_models``) without a network::

    with HubMirror({"imagegen-test/tiny-sd1": path}) as mirror:
        snapshot_download("imagegen-test/tiny-sd1", endpoint=mirror.url, cache_dir=tmp)
        assert any("/resolve/" in p for p in mirror.requests)

Routes (the layout huggingface_hub 2.x requests; see ``hf_api.py`` and ``file_download.py``):

- ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{revision}``: model info (``sha``, ``siblings``).
- ``GET /api/models/{repo_id}/tree/{revision}[/{path}]?recursive=...``: the file listing ``snapshot_download`` uses.
- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}``: the file, with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length`` (huggingface_hub refuses a response without the first two); ``Range: bytes=N-`` is honoured.
- ``GET /api/models?search=&pipeline_tag=&author=&filter=&sort=&direction=&limit=``: the search listing.

Errors carry the ``X-Error-Code`` header huggingface_hub maps to exceptions: ``RepoNotFound``
(RepositoryNotFoundError), ``RevisionNotFound`` (RevisionNotFoundError), ``EntryNotFound`` (EntryNotFoundError).
Every request is recorded (:attr:`HubMirror.requests`: paths with query; :attr:`HubMirror.calls`: with the method),
for tests that assert whether the hub was contacted. A revision is ``main`` or the repo's commit sha (derived from
the file hashes, so it is stable).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: Files the real hub stores in Git LFS (their ETag is the content's sha256; other files use the git blob sha1).
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf", ".msgpack", ".h5")
_CHUNK = 1 << 20
_EPOCH = "2024-01-01T00:00:00.000Z"


@dataclass(frozen=True, kw_only=True)
class RepoListing:
    """What ``list_models`` and ``model_info`` report about a repo besides its files. None means "derive it"."""

    downloads: int = 0
    likes: int = 0
    pipeline_tag: str | None = None
    tags: tuple[str, ...] | None = None
    library_name: str = "diffusers"
    created_at: str = _EPOCH
    last_modified: str = _EPOCH


@dataclass(frozen=True)
class _RepoFile:
    path: str
    source: Path
    size: int
    sha256: str
    git_sha1: str

    @property
    def is_lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def etag(self) -> str:
        return self.sha256 if self.is_lfs else self.git_sha1


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    files: dict[str, _RepoFile]
    sha: str
    listing: RepoListing

    def model_info(self) -> dict:
        siblings = [{"rfilename": f.path, "size": f.size, "blobId": f.git_sha1} for f in self.files.values()]
        return {"_id": self.sha[:24], **self.list_entry(), "private": False, "disabled": False, "siblings": siblings}

    def list_entry(self) -> dict:
        listing = self.listing
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0] if "/" in self.repo_id else None,
            "sha": self.sha,
            "downloads": listing.downloads,
            "likes": listing.likes,
            "pipeline_tag": listing.pipeline_tag or self._derived_pipeline_tag(),
            "tags": list(listing.tags if listing.tags is not None else self._derived_tags()),
            "library_name": listing.library_name,
            "createdAt": listing.created_at,
            "lastModified": listing.last_modified,
        }

    def _pipeline_class(self) -> str | None:
        index = self.files.get("model_index.json")
        if index is None:
            return None
        return json.loads(index.source.read_text(encoding="utf-8")).get("_class_name")

    def _derived_pipeline_tag(self) -> str:
        pipeline_class = self._pipeline_class() or ""
        return "image-to-image" if "Img2Img" in pipeline_class else "text-to-image"

    def _derived_tags(self) -> tuple[str, ...]:
        # The tags the real hub attaches to a diffusers repo (the pipeline class one lets clients tell families apart).
        tags = [self.listing.library_name, self.listing.pipeline_tag or self._derived_pipeline_tag()]
        if any(path.endswith(".safetensors") for path in self.files):
            tags.append("safetensors")
        if pipeline_class := self._pipeline_class():
            tags.append(f"diffusers:{pipeline_class}")
        return tuple(tags)


def _scan_repo(repo_id: str, folder: Path, listing: RepoListing) -> _Repo:
    files: dict[str, _RepoFile] = {}
    for source in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = source.relative_to(folder).as_posix()
        if relative.startswith(".cache/"):  # huggingface_hub's local_dir bookkeeping, not repo content
            continue
        data = source.read_bytes()
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        files[relative] = _RepoFile(relative, source, len(data), hashlib.sha256(data).hexdigest(), git_sha1)
    # A stable fake commit id: the same files give the same sha, so caches behave as with a real pinned revision.
    listing_digest = "\n".join(f"{f.path} {f.sha256}" for f in files.values()).encode()
    sha = hashlib.sha1(repo_id.encode() + b"\0" + listing_digest, usedforsecurity=False).hexdigest()
    return _Repo(repo_id, files, sha, listing)


@dataclass
class _State:
    """The mirror's mutable bookkeeping, shared with the request handler threads under one lock."""

    # Kept as the caller's Mapping, read only when a repo is first requested: a lazy mapping (such as the session's
    # tiny-model cache) then builds only the models a test actually fetches.
    folders: Mapping[str, Path]
    listings: dict[str, RepoListing]
    lock: threading.Lock = field(default_factory=threading.Lock)
    scanned: dict[str, _Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def repo(self, repo_id: str) -> _Repo | None:
        if repo_id not in self.folders and repo_id not in self.listings:
            return None
        with self.lock:
            # Hash a repo's files on first use only: tests that need one repo don't pay for all of them.
            if repo_id not in self.scanned:
                listing = self.listings.get(repo_id, RepoListing())
                if repo_id in self.folders:
                    self.scanned[repo_id] = _scan_repo(repo_id, Path(self.folders[repo_id]), listing)
                else:
                    self.scanned[repo_id] = _Repo(repo_id, {}, "0" * 40, listing)
            return self.scanned[repo_id]

    def all_repo_ids(self) -> list[str]:
        return sorted(set(self.folders) | set(self.listings))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        # Quiet: the request list on the mirror is the record tests use.
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    # -- routing ---------------------------------------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append((self.command, self.path))
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if path == "/api/models" and not head:
            self._list_models(query)
        elif path.startswith("/api/models/") and not head:
            self._api_model(path.removeprefix("/api/models/"))
        elif "/resolve/" in path:
            repo_id, _, rest = path.lstrip("/").partition("/resolve/")
            revision, _, file_path = rest.partition("/")
            self._resolve(repo_id, revision, file_path, head=head)
        else:
            self._error(HTTPStatus.NOT_FOUND, None, f"no route for {path}", head=head)

    def _find_repo(self, repo_id: str, revision: str, *, head: bool = False) -> _Repo | None:
        repo = self.server.state.repo(repo_id)
        if repo is None:
            self._error(HTTPStatus.NOT_FOUND, "RepoNotFound", "Repository not found", head=head)
            return None
        if revision not in ("main", repo.sha):
            self._error(HTTPStatus.NOT_FOUND, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return None
        return repo

    def _split_repo_path(self, rest: str) -> tuple[str, str, str]:
        """``{repo_id}[/revision/{rev}|/tree/{rev}[/{path}]]`` -> (repo_id, kind, remainder)."""
        for kind in ("/revision/", "/tree/"):
            repo_id, found, remainder = rest.partition(kind)
            if found:
                return repo_id, kind.strip("/"), remainder
        return rest, "info", "main"

    def _api_model(self, rest: str) -> None:
        repo_id, kind, remainder = self._split_repo_path(rest)
        if kind == "tree":
            revision, _, sub_path = remainder.partition("/")
            query = parse_qs(urlsplit(self.path).query)
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            repo = self._find_repo(repo_id, revision)
            if repo is not None:
                self._json(self._tree(repo, sub_path.strip("/"), recursive=recursive))
            return
        repo = self._find_repo(repo_id, remainder)
        if repo is not None:
            self._json(repo.model_info())

    # -- handlers --------------------------------------------------------------------------------------------------

    def _tree(self, repo: _Repo, sub_path: str, *, recursive: bool) -> list[dict]:
        prefix = f"{sub_path}/" if sub_path else ""
        entries: dict[str, dict] = {}
        for repo_file in repo.files.values():
            if not repo_file.path.startswith(prefix):
                continue
            parts = repo_file.path[len(prefix) :].split("/")
            # Folders are listed as entries of their own, as the hub does.
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                folder = prefix + "/".join(parts[:depth])
                folder_oid = hashlib.sha1(f"{repo.sha}:{folder}".encode(), usedforsecurity=False).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": folder_oid, "size": 0, "path": folder})
            if len(parts) > 1 and not recursive:
                continue
            entry: dict = {"type": "file", "oid": repo_file.git_sha1, "size": repo_file.size, "path": repo_file.path}
            if repo_file.is_lfs:
                entry["lfs"] = {"oid": repo_file.sha256, "size": repo_file.size, "pointerSize": 134}
            entries[repo_file.path] = entry
        return list(entries.values())

    def _list_models(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        entries = [repo.list_entry() for repo_id in state.all_repo_ids() if (repo := state.repo(repo_id)) is not None]
        if search := query.get("search", [""])[0].lower():
            entries = [e for e in entries if search in e["id"].lower()]
        if pipeline_tag := query.get("pipeline_tag", [""])[0]:
            entries = [e for e in entries if e["pipeline_tag"] == pipeline_tag]
        if author := query.get("author", [""])[0]:
            entries = [e for e in entries if e["author"] == author]
        for tag in query.get("filter", []):
            entries = [e for e in entries if tag in e["tags"]]
        if sort_key := query.get("sort", [""])[0]:
            if sort_key not in ("downloads", "likes", "createdAt", "lastModified", "trendingScore"):
                self._error(HTTPStatus.BAD_REQUEST, None, f"invalid sort {sort_key!r}")
                return
            # The hub sorts descending unless direction=1; ties keep id order so results are deterministic.
            descending = query.get("direction", ["-1"])[0] != "1"
            entries.sort(key=lambda e: e.get(sort_key, 0) or 0, reverse=descending)
        if limit := query.get("limit", [""])[0]:
            entries = entries[: int(limit)]
        self._json(entries)

    def _resolve(self, repo_id: str, revision: str, file_path: str, *, head: bool) -> None:
        repo = self._find_repo(repo_id, revision, head=head)
        if repo is None:
            return
        repo_file = repo.files.get(file_path)
        if repo_file is None:
            # The hub names the commit even for a missing file; huggingface_hub caches the absence under it.
            self._error(
                HTTPStatus.NOT_FOUND, "EntryNotFound", f"{file_path} does not exist", head=head, commit=repo.sha
            )
            return
        start = 0
        status = HTTPStatus.OK
        range_header = self.headers.get("Range", "")
        if range_header.startswith("bytes=") and range_header.endswith("-"):
            start = min(int(range_header[len("bytes=") : -1]), repo_file.size)
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(repo_file.size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{repo_file.etag}"')
        self.send_header("X-Repo-Commit", repo.sha)
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{repo_file.size - 1}/{repo_file.size}")
        self.end_headers()
        if head:
            return
        with repo_file.source.open("rb") as stream:
            stream.seek(start)
            while chunk := stream.read(_CHUNK):
                self.wfile.write(chunk)

    # -- responses -------------------------------------------------------------------------------------------------

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(
        self, status: HTTPStatus, code: str | None, message: str, *, head: bool = False, commit: str | None = None
    ) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if not head:
            self.wfile.write(body)


class HubMirror:
    """A Hugging Face Hub stand-in on a free loopback port, serving ``repos`` (repo id -> local folder).

    Use as a context manager; :attr:`url` is the endpoint to pass as ``endpoint=`` (or to patch in as
    ``huggingface_hub.constants.ENDPOINT``). ``listings`` adds search metadata (downloads, likes, tags) per repo id;
    an id that is only in ``listings`` is a repo without files.
    """

    def __init__(self, repos: Mapping[str, Path], *, listings: Mapping[str, RepoListing] | None = None) -> None:
        self._state = _State(repos, dict(listings or {}))
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("HubMirror is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[str]:
        """The path (with query string) of every request served so far, oldest first (a copy)."""
        return [path for _, path in self.calls]

    @property
    def calls(self) -> list[tuple[str, str]]:
        """Every request served so far as (method, path with query string), oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    def clear_requests(self) -> None:
        with self._state.lock:
            self._state.requests.clear()

    def commit_sha(self, repo_id: str) -> str:
        """The fake commit id the mirror reports for ``repo_id`` (stable for the same files)."""
        repo = self._state.repo(repo_id)
        if repo is None:
            raise KeyError(repo_id)
        return repo.sha

    def file_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def start(self) -> HubMirror:
        if self._server is None:
            self._server = _Server(self._state)
            self._thread = threading.Thread(target=self._server.serve_forever, name="hub-mirror", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None

    def __enter__(self) -> HubMirror:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
