"""A loopback stand-in for the Hugging Face Hub: just the endpoints huggingface_hub calls to
create a repository, commit files and download one (``HF_ENDPOINT`` points clients here).

Read from huggingface_hub's own source (``hf_api.create_repo`` / ``create_commit``,
``_commit_api``, ``file_download``): ``POST /api/repos/create``, ``POST /api/validate-yaml``
(a README.md in a commit), ``POST /api/models/{repo}/preupload/{rev}`` (answered "regular":
contents travel inline, base64, in the commit; the LFS/Xet transfer path is not stood in),
``POST /api/models/{repo}/commit/{rev}`` (ndjson), and ``HEAD``/``GET
/{repo}/resolve/{rev}/{file}`` (with the ``X-Repo-Commit`` and ``ETag`` headers the
client requires). Writes need ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field

_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/?]+)")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/?]+)")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>[^?]+)")


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "0" * 40
    private: bool = False


class HubStandIn:
    def __init__(self, token: str = "hf_test_token") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                hub.requests.append(f"POST {self.path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.post(self, body)

            def do_HEAD(self) -> None:  # noqa: N802
                hub.requests.append(f"HEAD {self.path}")
                hub.resolve(self, with_body=False)

            def do_GET(self) -> None:  # noqa: N802
                hub.requests.append(f"GET {self.path}")
                hub.resolve(self, with_body=True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    # -- replies ----------------------------------------------------------------------
    @staticmethod
    def reply(handler, status: int, payload: dict | bytes | None = None, headers: dict | None = None,
              with_body: bool = True) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
        handler.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(data)

    def authorized(self, handler) -> bool:
        if handler.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        self.reply(handler, 401, {"error": "Invalid credentials in Authorization header"},
                   {"X-Error-Message": "Invalid credentials in Authorization header"})
        return False

    def post(self, handler, body: bytes) -> None:
        path = handler.path
        if path.startswith("/api/validate-yaml"):
            self.reply(handler, 200, {"errors": [], "warnings": []})
            return
        match = _PREUPLOAD.match(path) or _COMMIT.match(path)
        creating = path.startswith("/api/repos/create")
        if not creating and match is None:
            self.reply(handler, 404, {"error": f"no endpoint {path} in the stand-in"})
            return
        if not self.authorized(handler):
            return
        if creating:
            self.create(handler, json.loads(body))
            return
        repo = self.repos.get(match["repo"])
        if repo is None:
            self.reply(handler, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        elif match.re is _PREUPLOAD:
            files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                     for f in json.loads(body)["files"]]
            self.reply(handler, 200, {"files": files, "commitOid": repo.commit})
        else:
            self.commit(handler, match["repo"], repo, body)

    def create(self, handler, payload: dict) -> None:
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if repo_id in self.repos:
            self.reply(handler, 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"})
            return
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
        self.reply(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def commit(self, handler, repo_id: str, repo: Repo, body: bytes) -> None:
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                self.reply(handler, 400, {"error": f"the stand-in does not take {item['key']}"})
                return
        repo.commit = hashlib.sha1(body).hexdigest()
        self.reply(handler, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.commit}",
                                  "commitOid": repo.commit, "pullRequestUrl": None})

    def resolve(self, handler, with_body: bool) -> None:
        match = _RESOLVE.match(handler.path)
        repo = self.repos.get(match["repo"]) if match else None
        if repo is None:
            self.reply(handler, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}, with_body)
            return
        if match["rev"] not in ("main", repo.commit):
            self.reply(handler, 404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"}, with_body)
            return
        data = repo.files.get(match["file"])
        if data is None:
            self.reply(handler, 404, {"error": "Entry not found"},
                       {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, with_body)
            return
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": repo.commit,
                   "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        self.reply(handler, 200, data, headers, with_body)

    def __enter__(self) -> "HubStandIn":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
