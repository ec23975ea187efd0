"""Local mirrors of the private repositories: fetched with the key, installed from without it.

Every build runs in two phases:
1. Fetch, with the key. deploykey's own `git` (no package's build code runs) brings every private
   repository the app needs into a bare mirror, ROOT/<host>/<repo>.git, with ROOT in the build
   cache. Mirrors are updated incrementally: a commit or a tag already in the mirror costs no
   network at all; a branch, or a ref not there yet, is one `git fetch`.
2. Build, without the key. The key dir is removed first; the installer (pip, uv, Poetry, Pipenv,
   whoever runs it) then gets git settings that rewrite each private URL to its mirror
   (`url.file://ROOT/<host>/<repo>.insteadOf=ssh://git@<host>/<repo>`). pip >= 25.1 forces
   `GIT_SSH_COMMAND="ssh -oBatchMode=yes"` (pip `_internal/vcs/git.py`): it no longer matters, as no
   ssh runs. git keeps the original URL as the clone's origin, so `direct_url.json`, uv.lock and
   poetry.lock record `ssh://git@<host>/<repo>`, never a mirror path. Every other URL on a private
   host is rewritten to a path under ROOT/not-fetched that does not exist: a private repository
   that was not fetched fails at once, named (see `not_fetched`), instead of reaching for a key
   that is gone.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykey import run, sealedgit
from deploykey.errors import UserError
from deploykey.requirements import GitRequirement

DIR = "mirrors"  # under the kit's part of the build cache
NOT_FETCHED = "not-fetched"
SAFE_PART = re.compile(r"^[A-Za-z0-9._~-]+$")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
FETCH_KEY = "remote.origin.fetch"
# Later fetches update every branch and tag (and drop deleted ones), never GitHub's refs/pull/*.
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# What `git clone --bare` and deploykey write into a mirror's config, and nothing else.
MIRROR_KEYS = {
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "remote.origin.url",
    FETCH_KEY,
}


def mirror_path(root: Path, req: GitRequirement) -> Path:
    """ROOT/<host[_port]>/<repo>.git; a repository path that could leave ROOT is refused."""
    parts = req.repo.split("/")
    if not all(SAFE_PART.match(part) and part not in (".", "..") for part in parts):
        raise ValueError(f"unsafe repository path {req.repo!r}")
    host = req.host_port.replace(":", "_")
    return root.joinpath(host, *parts[:-1], parts[-1] + ".git")


@dataclass(frozen=True)
class Fetched:
    """One repository in its mirror: the result of the fetch (for the doctor's wording) and the
    refs it holds afterwards."""

    path: Path
    result: run.Result
    refs: Mapping[str, str]
    network: bool

    def has_commit(self, git: str, sha: str) -> bool:
        return holds_commit(git, self.path, sha)


@dataclass
class Fetcher:
    """Fetches requirements into their mirrors under `root`, one at a time per mirror (two
    packages of one repository are one fetch), several mirrors at once."""

    git: str
    env: Mapping[str, str]
    root: Path
    locks: dict[Path, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    fetched: dict[Path, GitRequirement] = field(default_factory=dict)
    discarded: list[Path] = field(default_factory=list)
    made: set[Path] = field(default_factory=set)  # directories the clones created

    def tidy(self) -> None:
        """Removes the directories the clones created that hold nothing (every clone under them
        failed): after all fetches, as two clones that fail at once share their parents."""
        for directory in sorted(self.made, key=lambda path: len(path.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()

    def needs_network(self, req: GitRequirement) -> bool:
        """Whether fetching `req` will ask its host: not when its mirror, untouched, already
        holds the commit or tag it names (a branch is always asked again)."""
        path = mirror_path(self.root, req)
        return not (
            path.is_dir()
            and _untouched(self.git, path, req)
            and _settled(self.git, path, wanted(req))
        )

    def fetch(self, req: GitRequirement) -> Fetched:
        path = mirror_path(self.root, req)
        with self.guard:
            lock = self.locks.setdefault(path, threading.Lock())
        with lock:
            network = True
            if path.is_dir() and not _untouched(self.git, path, req):
                # Build code (it can write the build cache) may have planted hooks or settings
                # that a fetch with the keys would run: such a mirror is never used again.
                shutil.rmtree(path)
                self.discarded.append(path)
            if not path.is_dir():
                result = self._clone(req, path)
            elif _settled(self.git, path, wanted(req)):
                network = False
                result = run.Result(("git", "cat-file", "-e", str(wanted(req))), 0, ())
            else:
                result = run.run(
                    sealedgit.argv(
                        self.git, "--git-dir", str(path), "fetch", "--prune", "--quiet", "origin"
                    ),
                    env=self.env,
                    source=(req.host_port, req.repo),
                )
                _check_room(result, req, path)
            commit = wanted(req) or ""
            if (
                result.ok
                and network
                and FULL_SHA.match(commit)
                and not holds_commit(self.git, path, commit)
            ):
                # On no branch or tag any more (a force-push): ask for the commit itself, kept
                # under a ref of its own so that git's gc never drops it.
                refspec = f"{commit}:refs/deploykey/{commit}"
                run.run(
                    sealedgit.argv(
                        self.git, "--git-dir", str(path), "fetch", "--quiet", "origin", refspec
                    ),
                    env=self.env,
                    source=(req.host_port, req.repo),
                )
            if result.ok:
                with self.guard:
                    self.fetched.setdefault(path, req)
            refs = _refs(self.git, path) if result.ok else {}
            return Fetched(path, result, refs, network)

    def _clone(self, req: GitRequirement, path: Path) -> run.Result:
        """A new bare mirror, made beside its place and renamed into it: a failed or interrupted
        clone leaves nothing half-written where a later build would trust it."""
        with self.guard:
            self.made.update(parent for parent in path.parents if not parent.exists())
            path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            result = run.run(
                sealedgit.argv(
                    self.git, "clone", "--bare", "--quiet", "--", req.remote, str(partial)
                ),
                env=self.env,
                source=(req.host_port, req.repo),
            )
        except BaseException:  # stopped (a signal, the fetch's deadline): nothing half-written
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if not result.ok:
            shutil.rmtree(partial, ignore_errors=True)
            _check_room(result, req, path)
            return result
        # A bare clone records no refspec of its own.
        for refspec in REFSPECS:
            _local([self.git, "--git-dir", str(partial), "config", "--add", FETCH_KEY, refspec])
        partial.rename(path)
        return result


NO_SPACE = "No space left on device"  # strerror(ENOSPC), in git's message for a failed write


def _check_room(result: run.Result, req: GitRequirement, path: Path) -> None:
    """A fetch that failed for a full disk is no problem of the host's: say which disk. (How much
    the repository needs is not known: git removes what it wrote of a failed clone.)"""
    if result.ok or NO_SPACE not in result.text:
        return
    usage = shutil.disk_usage(_existing(path))
    raise UserError(
        "disk::full",
        path=path.parent,
        what=f"{req.host_port}/{req.repo}",
        free=run.describe_size(usage.free),
        total=run.describe_size(usage.total),
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _untouched(git: str, path: Path, req: GitRequirement) -> bool:
    """The mirror's config holds only what clone and deploykey wrote, for this repository's URL:
    no hook path, no ssh command, no credential helper, no include, nothing a fetch would run."""
    if path.is_symlink() or not (path / "config").is_file() or (path / "config").is_symlink():
        return False
    listed = _local([git, "config", "--file", str(path / "config"), "--no-includes", "--list"])
    if not listed.ok:
        return False
    entries = [line.partition("=") for line in listed.lines]
    keys = {key.lower() for key, _, _ in entries}
    urls = [value for key, _, value in entries if key.lower() == "remote.origin.url"]
    fetches = sorted(value for key, _, value in entries if key.lower() == FETCH_KEY)
    forms = {url.removesuffix(".git") for url in [req.remote, *url_forms(req)]}
    known = len(urls) == 1 and urls[0].removesuffix(".git") in forms
    return keys <= MIRROR_KEYS and known and fetches == sorted(REFSPECS)


def wanted(req: GitRequirement) -> str | None:
    """What must be in the mirror: the commit a lockfile pins, else the ref asked for."""
    return req.commit or req.ref


def _settled(git: str, path: Path, ref: str | None) -> bool:
    """A full commit the mirror has, or a tag it has, needs no network: commits never change, and
    a tag is taken to name one commit (moving a tag needs a new tag). A branch, the default
    branch, or anything missing is fetched again."""
    if ref is None:
        return False
    if FULL_SHA.match(ref):
        return holds_commit(git, path, ref)
    return (path / "refs" / "tags" / ref).is_file() or _packed_tag(path, ref)


def _packed_tag(path: Path, ref: str) -> bool:
    try:
        text = (path / "packed-refs").read_text()
    except OSError:
        return False
    return f" refs/tags/{ref}\n" in text


def _local(argv: Sequence[str]) -> run.Result:
    """A read of a mirror on disk: a short git run straight through subprocess (run.capture), not
    through `sh`, whose start costs tens of milliseconds a call in a build that makes dozens.
    Sealed like the fetch (the key dir exists while it runs), and with no protocol at all."""
    return run.capture(sealedgit.argv(*argv), env=sealedgit.env(), stdin=b"")


def holds_commit(git: str, path: Path, sha: str) -> bool:
    return _local([git, "--git-dir", str(path), "cat-file", "-e", f"{sha}^{{commit}}"]).ok


def object_type(git: str, path: Path, sha: str) -> str:
    """What an object of a mirror is: commit, tag, tree or blob (`git cat-file -t`)."""
    result = _local([git, "--git-dir", str(path), "cat-file", "-t", sha])
    return result.text.strip() if result.ok else "missing object"


def _refs(git: str, path: Path) -> dict[str, str]:
    """The mirror's refs in `git ls-remote` form: name -> sha, tags also peeled (`^{}`), and HEAD."""
    result = _local(
        [
            git,
            "--git-dir",
            str(path),
            "for-each-ref",
            "--format=%(objectname) %(refname) %(*objectname)",
            "refs/heads",
            "refs/tags",
        ],
    )
    refs: dict[str, str] = {}
    for line in result.lines:
        sha, name, *peeled = line.split(" ")
        refs[name] = sha
        if peeled and peeled[0]:
            refs[name + "^{}"] = peeled[0]
    try:  # a bare clone's HEAD names the remote's default branch: `ref: refs/heads/main`
        head = (path / "HEAD").read_text().removeprefix("ref:").strip()
    except OSError:
        head = ""
    if head in refs:
        refs["HEAD"] = refs[head]
    return refs


def present(git: str, path: Path, commit: str, names: Sequence[str]) -> list[str]:
    """Which of these files (paths from the repository's root) a commit of a mirror has."""
    result = _local(
        [git, "--git-dir", str(path), "ls-tree", "--name-only", commit, "--", *names],
    )
    return [name for name in result.lines if name in names] if result.ok else []


def show(git: str, path: Path, commit: str, name: str) -> str | None:
    """A file's text at a commit of a mirror, or None if it is not there."""
    result = _local([git, "--git-dir", str(path), "show", f"{commit}:{name}"])
    return result.text if result.ok else None


def submodules(git: str, path: Path, commit: str) -> list[tuple[str, str, str]]:
    """(path, url, gitlink commit) of each submodule at a commit of a mirror."""
    config = _local(
        [
            git,
            "--git-dir",
            str(path),
            "config",
            "--blob",
            f"{commit}:.gitmodules",
            "--get-regexp",
            r"^submodule\..*\.(path|url)$",
        ],
    )
    if not config.ok:
        return []
    entries: dict[str, dict[str, str]] = {}
    for line in config.lines:
        key, _, value = line.partition(" ")
        name, _, kind = key[len("submodule.") :].rpartition(".")
        entries.setdefault(name, {})[kind] = value
    found = []
    for entry in entries.values():
        if "path" not in entry or "url" not in entry:
            continue
        tree = _local(
            [git, "--git-dir", str(path), "ls-tree", commit, "--", entry["path"]],
        )
        words = tree.lines[0].split() if tree.ok and tree.lines else []
        if len(words) >= 3 and words[1] == "commit":
            found.append((entry["path"], entry["url"], words[2]))
    return found


def resolve_url(base: str, url: str) -> str:
    """A submodule URL relative to its superproject's remote (`../other.git`), made absolute."""
    if not url.startswith(("./", "../")):
        return url
    parts = base.rstrip("/").removesuffix(".git").split("/")
    for part in url.split("/"):
        if part == "..":
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


@dataclass(frozen=True)
class Mirrors:
    """The mirrors a build fetched, and the git settings that hand them to the installer."""

    root: Path
    repositories: tuple[tuple[GitRequirement, Path], ...]
    private_hosts: tuple[tuple[str, str], ...]  # (scheme, host[:port]) that need deploykey
    submodules: bool = False

    def settings(self) -> list[tuple[str, str]]:
        """`url.<mirror>.insteadOf` for every form of each repository's URL, a catch-all into
        ROOT/not-fetched for the rest of each private host, and (only when a mirrored repository
        has submodules) `protocol.file.allow`: git refuses local URLs for submodules by default."""
        entries: list[tuple[str, str]] = []
        for req, path in self.repositories:
            target = "file://" + str(path.with_name(path.name.removesuffix(".git")))
            for form in url_forms(req):
                entries.append((f"url.{target}.insteadOf", form))
        missing = self.root / NOT_FETCHED
        for scheme, host in self.private_hosts:
            target = f"file://{missing / host.replace(':', '_')}/"
            if scheme == "ssh":
                entries.append((f"url.{target}.insteadOf", f"ssh://git@{host}/"))
                if ":" not in host:
                    entries.append((f"url.{target}.insteadOf", f"git@{host}:"))
            else:
                entries.append((f"url.{target}.insteadOf", f"{scheme}://{host}/"))
        if self.submodules:
            entries.append(("protocol.file.allow", "always"))
        return entries

    def env(self) -> dict[str, str]:
        # Poetry's default git client (dulwich) reads no GIT_CONFIG_* variable; its system git
        # client does.
        return {**as_env(self.settings()), "POETRY_SYSTEM_GIT_CLIENT": "true"}

    def gitconfig(self) -> str:
        return as_gitconfig(self.settings())

    def export(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())


def planted(git: str, fetched: Mirrors) -> UserError | None:
    """A rule of the git config the installer's (unsealed) git reads, that deploykey did not
    write, and that would send a fetched repository's URL elsewhere than its mirror. git takes the
    longest matching insteadOf prefix, the first one read on a tie, and reads the command line's
    settings (deploykey's GIT_CONFIG_*) last (remote.c, alias_url): any such rule whose prefix is
    as long as deploykey's wins. Read with the installer's environment; no key exists any more."""
    listed = run.capture(
        [git, "-C", "/", "config", "--show-origin", "-z", "--get-regexp", r"^url\..*\.insteadof$"],
        env=run.child_env(),
        stdin=b"",
    )
    ours = {(name[len("url.") : -len(".insteadOf")], form) for name, form in fetched.settings()}
    forms = [form for req, _ in fetched.repositories for form in url_forms(req)]
    records = listed.text.split("\0") if listed.ok else []
    for origin, entry in zip(records[0::2], records[1::2], strict=False):
        key, _, value = entry.partition("\n")
        target = key[len("url.") : -len(".insteadof")]
        for form in forms:
            if value.startswith(form) and (target, value) not in ours:
                return UserError(
                    "gitconfig::rewrite",
                    origin=origin.removeprefix("file:"),
                    url=form,
                    target=target,
                    value=value,
                )
    return None


def url_forms(req: GitRequirement) -> list[str]:
    """The URLs an installer may ask git for this repository under: ssh with its user, the
    scp-like form, https (a transitive dependency may name it either way)."""
    user = f"{req.user or 'git'}@"
    forms = []
    for name in req.written_hosts:
        host = req.host_port.replace(req.host, name, 1)
        forms += [f"https://{name}/{req.repo}"] if ":" not in host else []
        if req.scheme == "ssh" or ":" not in host:
            forms.append(f"ssh://{user}{host}/{req.repo}")
            if ":" not in host:
                forms.append(f"{user}{host}:{req.repo}")
        if req.scheme != "ssh":
            forms.append(f"{req.scheme}://{host}/{req.repo}")
    return list(dict.fromkeys(forms))


def as_env(settings: Sequence[tuple[str, str]]) -> dict[str, str]:
    """For a child process; git reads GIT_CONFIG_COUNT/KEY_n/VALUE_n like its config files."""
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for index, (name, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{index}"] = name
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def as_gitconfig(settings: Iterable[tuple[str, str]]) -> str:
    """The same settings as .gitconfig text, for a process that only reads $HOME (an app hook's
    pip; Poetry's dulwich, which reads no GIT_CONFIG_* variable)."""
    lines: list[str] = []
    for name, value in settings:
        section, _, rest = name.partition(".")
        subsection, _, key = rest.rpartition(".")
        header = f'[{section} "{_escape(subsection)}"]' if subsection else f"[{section}]"
        lines += [header, f'\t{key} = "{_escape(value)}"']
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def not_fetched(text: str, root: Path) -> list[str]:
    """host/repo of every private repository an installer asked for that was not fetched."""
    marker = str(root / NOT_FETCHED) + "/"
    found = []
    for line in text.splitlines():
        start = line.find(marker)
        if start < 0:
            continue
        rest = re.split(r"['\"\s]", line[start + len(marker) :], maxsplit=1)[0]
        rest = rest.removesuffix(".git").removesuffix("/")
        if "/" in rest:
            host, repo = rest.split("/", 1)
            found.append(f"{host.replace('_', ':')}/{repo}")
    return sorted(set(found))
