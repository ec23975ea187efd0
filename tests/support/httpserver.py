"""A real git HTTP server on 127.0.0.1 that requires a token: nginx, fcgiwrap, git http-backend.

nginx asks for HTTP basic credentials (the user name and the token as the password) and hands the
request to `git http-backend` through fcgiwrap, as a self-hosted git server behind a token would.
Its access log records each request's user and URL, so tests can check that no token was ever in
a URL. Started and stopped by the tests; Debian packages nginx and fcgiwrap (.ci/setup).

`create(user, token)` guards the repositories with that one htpasswd entry; `create_guarded` takes
other nginx directives instead (githubapi.GitHubGit asks the GitHub API stand-in about each request).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from support.gitserver import free_port, make_bare_repo

NGINX = "/usr/sbin/nginx"
FCGIWRAP = "/usr/sbin/fcgiwrap"
BACKEND = "/usr/lib/git-core/git-http-backend"


@dataclass
class GitHttpServer:
    root: Path
    user: str
    token: str
    port: int = 0
    processes: tuple[subprocess.Popen[bytes], ...] = ()
    # nginx directives in the repositories' location that decide who may fetch, and any
    # server-level directives (further locations) they rely on.
    guard: str = ""
    extra: str = ""
    # A certificate and its key: HTTPS (as GitHub and GitHub Enterprise Server serve git) instead
    # of plain HTTP.
    tls: tuple[Path, Path] | None = None

    @classmethod
    def create(cls, user: str, token: str) -> GitHttpServer:
        root = _new_root()
        # nginx's PLAIN scheme: the password as it is (a test token, made at run time).
        (root / "htpasswd").write_text(f"{user}:{{PLAIN}}{token}\n")
        guard = f'auth_basic "git";\nauth_basic_user_file {root}/htpasswd;'
        return cls(root, user, token, guard=guard)

    @classmethod
    def create_guarded(
        cls, guard: str, extra: str = "", tls: tuple[Path, Path] | None = None
    ) -> GitHttpServer:
        return cls(_new_root(), "", "", guard=guard, extra=extra, tls=tls)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def add_repo(self, name: str, files: dict[str, str], tags: tuple[str, ...] = ("v1.0",)) -> None:
        make_bare_repo(self.root, name, files, tags)

    def access_log(self) -> str:
        return (self.root / "access.log").read_text()

    def start(self) -> None:
        self.port = free_port()
        socket_path = self.root / "fcgiwrap.sock"
        config = self.root / "nginx.conf"
        temp = self.root / "temp"
        temp.mkdir()
        config.write_text(
            textwrap.dedent(
                f"""\
                daemon off;
                user root;
                worker_processes 1;
                pid {self.root}/nginx.pid;
                error_log {self.root}/error.log info;
                events {{ worker_connections 64; }}
                http {{
                    log_format user '$remote_user "$request" $status';
                    access_log {self.root}/access.log user;
                    client_body_temp_path {temp}/body;
                    fastcgi_temp_path {temp}/fastcgi;
                    proxy_temp_path {temp}/proxy;
                    uwsgi_temp_path {temp}/uwsgi;
                    scgi_temp_path {temp}/scgi;
                    server {{
                        listen 127.0.0.1:{self.port}@SSL@;
                        @EXTRA@
                        location / {{
                            @GUARD@
                            fastcgi_pass unix:{socket_path};
                            fastcgi_param SCRIPT_FILENAME {BACKEND};
                            fastcgi_param GIT_PROJECT_ROOT {self.root}/repos;
                            fastcgi_param GIT_HTTP_EXPORT_ALL "";
                            fastcgi_param PATH_INFO $uri;
                            fastcgi_param QUERY_STRING $args;
                            fastcgi_param REQUEST_METHOD $request_method;
                            fastcgi_param CONTENT_TYPE $content_type;
                            fastcgi_param CONTENT_LENGTH $content_length;
                            fastcgi_param REMOTE_USER $remote_user;
                            fastcgi_param GIT_PROTOCOL $http_git_protocol;
                            # As GitHub serves git: partial clones (--filter) and a fetch of a
                            # commit by its id (git-config(1), uploadpack.*).
                            fastcgi_param GIT_CONFIG_COUNT 2;
                            fastcgi_param GIT_CONFIG_KEY_0 uploadpack.allowFilter;
                            fastcgi_param GIT_CONFIG_VALUE_0 true;
                            fastcgi_param GIT_CONFIG_KEY_1 uploadpack.allowAnySHA1InWant;
                            fastcgi_param GIT_CONFIG_VALUE_1 true;
                        }}
                    }}
                }}
                """
            )
            .replace("@SSL@", self._ssl())
            .replace("@EXTRA@", self.extra)
            .replace("@GUARD@", self.guard)
        )
        log = (self.root / "servers.log").open("ab")
        fcgi = subprocess.Popen([FCGIWRAP, "-s", f"unix:{socket_path}"], stdout=log, stderr=log)
        nginx = subprocess.Popen(
            [NGINX, "-c", str(config), "-p", str(self.root)], stdout=log, stderr=log
        )
        self.processes = (fcgi, nginx)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                if socket_path.exists():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop(keep=True)
        raise RuntimeError(
            "the git HTTP server did not start: " + (self.root / "servers.log").read_text()
        )

    def _ssl(self) -> str:
        if self.tls is None:
            return ""
        cert, key = self.tls
        return f" ssl;\nssl_certificate {cert};\nssl_certificate_key {key}"

    def stop(self, keep: bool = False) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=10)
        self.processes = ()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def _new_root() -> Path:
    for program in (NGINX, FCGIWRAP, BACKEND):
        if not Path(program).exists():
            raise RuntimeError(
                f"{program} is missing: install nginx, fcgiwrap and git (.ci/setup does)"
            )
    root = Path(tempfile.mkdtemp(prefix="deploykey-httpserver-"))
    (root / "repos").mkdir()
    return root
