"""A real OpenSSH sshd on 127.0.0.1 that serves git repositories the way GitHub does.

- Clients log in as `git`; each authorized key has a forced command (`restrict`, no shell, no
  forwarding) that knows which key connected.
- A key reads only the repositories it was granted, like a GitHub deploy key: any other repository
  gets `ERROR: Repository not found.`, exactly as GitHub answers.
- `ssh -T` (no command) answers `Hi <org>/<repo>! You've successfully authenticated, but GitHub does
  not provide shell access.` and exits 1.
- Every request is logged (`key repo verdict`) so tests can tell which key fetched what.
Nothing is mocked: the clients are the real ssh and git, the server the real sshd and git-upload-pack.
sshd runs as root (required to switch to the `git` user), so the tests run as root, as CI does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
GIT_USER = "git"

FORCED_COMMAND = r"""#!/bin/sh
# Forced command for one client key ($1): behave like GitHub's git endpoint for deploy keys.
root=$(dirname "$0")
key="$1"
command="$SSH_ORIGINAL_COMMAND"
if [ -z "$command" ]; then
  repo=$(awk -v k="$key" '$1 == k { print $2; exit }' "$root/access")
  echo "$key - greeting" >> "$root/log"
  echo "Hi ${repo:-$key}! You've successfully authenticated, but GitHub does not provide shell access." >&2
  exit 1
fi
case "$command" in
  "git-upload-pack "*) path=${command#git-upload-pack } ;;
  "git-receive-pack "*)
    echo "ERROR: The key you are authenticating with has been marked as read only." >&2
    exit 1 ;;
  *)
    echo "Invalid command: $command" >&2
    exit 1 ;;
esac
path=$(printf '%s' "$path" | tr -d "'\"")
path=${path#/}
repo=${path%.git}
if grep -qxF "$key $repo" "$root/access" && [ -d "$root/repos/$repo.git" ]; then
  echo "$key $repo granted" >> "$root/log"
  case "$repo" in
    */slow-fetch) echo "$key" > "$root/repos/slow-fetch-started"; sleep 60 ;;  # a test interrupts it
    */endless-refs | */flood-refs)
      # A host that never stops talking: a ref advertisement (pkt-lines, gitprotocol-pack) with
      # no end, one ref a second (endless) or as fast as it goes (flood).
      sha=$(git --git-dir="$root/repos/$repo.git" rev-parse HEAD)
      line="$sha HEAD" caps="ofs-delta side-band-64k"
      printf '%04x%s\0%s\n' $((${#line} + ${#caps} + 6)) "$line" "$caps"
      n=0
      while :; do
        n=$((n + 1))
        printf '0043%s refs/heads/b%09d\n' "$sha" "$n"
        case "$repo" in */endless-refs) sleep 1 ;; esac
      done ;;
  esac
  # Count what the server sends (what GitHub would bill as egress): upload-pack's stdout through
  # dd, whose summary line on stderr starts with the byte count (coreutils dd); upload-pack's own
  # exit status is kept.
  status=$(mktemp)
  { git-upload-pack "$root/repos/$repo.git"; echo $? > "$status"; } | dd bs=65536 2> "$status.dd"
  echo "$key $repo $(awk '/bytes/ { print $1; exit }' "$status.dd")" >> "$root/sent"
  code=$(cat "$status")
  rm -f "$status" "$status.dd"
  exit "${code:-1}"
fi
echo "$key $repo refused" >> "$root/log"
echo "ERROR: Repository not found." >&2
exit 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_git_user() -> pwd.struct_passwd:
    """The `git` account sshd switches to; created once on the test machine (needs root)."""
    try:
        user = pwd.getpwnam(GIT_USER)
    except KeyError:
        if os.getuid() != 0:
            raise RuntimeError(
                "the e2e tests need root (to start sshd and create the git user), as CI has"
            ) from None
        subprocess.run(
            [
                "useradd",
                "--system",
                "--create-home",
                "--home-dir",
                "/home/git",
                "--shell",
                "/bin/sh",
                GIT_USER,
            ],
            check=True,
        )
        user = pwd.getpwnam(GIT_USER)
    # useradd leaves the account locked ("!" password), and sshd without PAM refuses locked
    # accounts even for key logins; "*" means no password yet not locked.
    shadow = Path("/etc/shadow")
    if os.getuid() == 0 and shadow.exists():
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == GIT_USER and fields[1].startswith("!"):
                subprocess.run(["usermod", "-p", "*", GIT_USER], check=True)
    home = Path(user.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True)
        os.chown(home, user.pw_uid, user.pw_gid)
    return user


# The server's repositories belong to the git user; root builds them (git 2.39 honours
# safe.directory only in a global or system config).
SAFE_CONFIG = Path(tempfile.gettempdir()) / "deploykey-gitserver-safe.gitconfig"


def run_git(*args: str, cwd: Path | None = None) -> str:
    if not SAFE_CONFIG.exists():
        SAFE_CONFIG.write_text("[safe]\n\tdirectory = *\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(cwd or "/tmp"),
        "GIT_CONFIG_GLOBAL": str(SAFE_CONFIG),
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def make_bare_repo(
    root: Path,
    name: str,
    files: dict[str, str],
    tags: tuple[str, ...],
    submodules: dict[str, tuple[str, str]] | None = None,
) -> Path:
    """ROOT/repos/NAME.git: one commit on main with these files, these tags, and these submodules
    (path: (URL as .gitmodules gives it, a repository already in ROOT/repos))."""
    work = Path(tempfile.mkdtemp(prefix="work-", dir=root))
    for relative, content in files.items():
        path = work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    run_git("init", "-q", "-b", "main", cwd=work)
    for path, (url, repo) in (submodules or {}).items():
        source = str(root / "repos" / f"{repo}.git")
        local = ("-c", "protocol.file.allow=always")
        run_git(*local, "submodule", "add", "-q", source, path, cwd=work)
        run_git("config", "-f", ".gitmodules", f"submodule.{path}.url", url, cwd=work)
    run_git("add", "-A", cwd=work)
    run_git("commit", "-q", "-m", "initial", cwd=work)
    for tag in tags:
        run_git("tag", tag, cwd=work)
    bare = root / "repos" / f"{name}.git"
    bare.parent.mkdir(parents=True, exist_ok=True)
    run_git("clone", "-q", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    serve_as_github(bare)
    return bare


# What GitHub's git endpoint allows besides protocol v2 (sshd passes GIT_PROTOCOL: AcceptEnv):
# partial clone (`--filter=blob:none`, which pip uses; GitHub's engineers on the git list,
# http://mail.spinics.net/lists/git/msg377911.html: "Some hosts like GitHub support some partial
# clone filters", blob filters included) and fetching a commit or an object by its id when it is
# reachable (git-config(1), uploadpack.allowReachableSHA1InWant; over protocol v2 upload-pack
# checks no reachability at all, gitprotocol-v2(5) `want`). GitHub is not known to serve
# unreachable objects, so allowAnySHA1InWant stays off.
SERVED_AS_GITHUB = {
    "uploadpack.allowFilter": "true",
    "uploadpack.allowReachableSHA1InWant": "true",
}


def serve_as_github(bare: Path, filters: bool = True) -> None:
    """Serve `bare` as GitHub does; `filters=False` is a host that refuses partial clones."""
    for key, value in SERVED_AS_GITHUB.items():
        allowed = "false" if key == "uploadpack.allowFilter" and not filters else value
        run_git("config", "--file", str(bare / "config"), key, allowed, cwd=bare)


@dataclass
class GitServer:
    root: Path
    port: int = 0
    host_key_public: str = ""
    process: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> GitServer:
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} is missing: install openssh-server (.ci/run does)")
        user = ensure_git_user()
        # Under /tmp, traversable by the git user (pytest's own tmp dirs are 0700 root).
        root = Path(tempfile.mkdtemp(prefix="deploykey-gitserver-", dir="/tmp"))
        root.chmod(0o755)
        (root / "repos").mkdir()
        (root / "access").touch()
        (root / "log").touch()
        (root / "sent").touch()
        (root / "authorized_keys").touch()
        shell = root / "forced-command"
        shell.write_text(FORCED_COMMAND)
        shell.chmod(0o755)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(root / "host_key")],
            check=True,
        )
        for name in ("log", "sent", "repos"):
            os.chown(root / name, user.pw_uid, user.pw_gid)
        server = cls(root)
        server.host_key_public = " ".join((root / "host_key.pub").read_text().split()[:2])
        return server

    @property
    def known_hosts_line(self) -> str:
        return f"github.com {self.host_key_public}"

    def deploykey_yml(self, host: str = "github.com") -> str:
        return textwrap.dedent(
            f"""\
            hosts:
              {host}:
                hostname: 127.0.0.1
                port: {self.port}
                known_hosts: ["{host} {self.host_key_public}"]
            """
        )

    def add_repo(
        self,
        name: str,
        files: dict[str, str],
        tags: tuple[str, ...] = ("v1.0",),
        submodules: dict[str, tuple[str, str]] | None = None,
    ) -> Path:
        """A bare repository `name` with these files, tags and submodules (path: (URL as
        .gitmodules gives it, a repository already on this server)), owned by the git user."""
        bare = make_bare_repo(self.root, name, files, tags, submodules)
        user = pwd.getpwnam(GIT_USER)
        for path in [bare.parent, *bare.rglob("*"), bare]:
            os.chown(path, user.pw_uid, user.pw_gid)
        return bare

    def add_commit(self, name: str, files: dict[str, str], tag: str) -> None:
        """A new commit on main in repository `name`, tagged (a dependency's new release)."""
        work = Path(tempfile.mkdtemp(prefix="work-", dir=self.root))
        bare = self.root / "repos" / f"{name}.git"
        run_git("clone", "-q", str(bare), str(work / "clone"))
        clone = work / "clone"
        for relative, content in files.items():
            path = clone / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        run_git("add", "-A", cwd=clone)
        run_git("commit", "-q", "-m", f"release {tag}", cwd=clone)
        run_git("tag", tag, cwd=clone)
        run_git("push", "-q", "origin", "main", tag, cwd=clone)
        shutil.rmtree(work)
        user = pwd.getpwnam(GIT_USER)
        for path in [bare, *bare.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def grant(self, label: str, public_key: str, repos: list[str]) -> None:
        """Authorize a client key (like adding a deploy key) for exactly these repositories."""
        shell = self.root / "forced-command"
        options = f'command="{shell} {label}",restrict'
        with (self.root / "authorized_keys").open("a") as file:
            file.write(f"{options} {public_key.strip()}\n")
        with (self.root / "access").open("a") as file:
            for repo in repos:
                file.write(f"{label} {repo}\n")
        self.keys[label] = public_key

    def revoke(self, label: str) -> None:
        """Remove a client key (like deleting a deploy key): sshd refuses it from now on."""
        marker = f'{self.root / "forced-command"} {label}"'
        authorized = self.root / "authorized_keys"
        kept = [line for line in authorized.read_text().splitlines(True) if marker not in line]
        authorized.write_text("".join(kept))
        self.keys.pop(label, None)

    def log(self) -> list[str]:
        return (self.root / "log").read_text().splitlines()

    def sent(self, repo: str | None = None) -> int:
        """Bytes the server's git-upload-pack sent so far (to every key), for `repo` or all."""
        total = 0
        for line in (self.root / "sent").read_text().splitlines():
            _, name, count = (line.split(" ") + ["", "", ""])[:3]
            if (repo is None or name == repo) and count.isdigit():
                total += int(count)
        return total

    def start(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.port = free_port()
        config = self.root / "sshd_config"
        config.write_text(
            textwrap.dedent(
                f"""\
                Port {self.port}
                ListenAddress 127.0.0.1
                HostKey {self.root}/host_key
                PidFile {self.root}/sshd.pid
                AuthorizedKeysFile {self.root}/authorized_keys
                AllowUsers {GIT_USER}
                StrictModes no
                UsePAM no
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PubkeyAuthentication yes
                PermitRootLogin no
                AcceptEnv GIT_PROTOCOL
                PrintMotd no
                LogLevel VERBOSE
                """
            )
        )
        log = (self.root / "sshd.log").open("ab")
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.root / "sshd.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start: " + (self.root / "sshd.log").read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
