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

A mirror in the build cache is untrusted input: build code of an earlier build could write it.
git obeys more than a git dir's `config` (`commondir` sends config, refs and objects elsewhere,
`objects/info/alternates` and `info/grafts` change history, a packed object is not checked against
its name when read), so a changed mirror could run a program of its choosing while the key is
reachable, or hand over code that is not the host's. Each mirror is therefore sealed after every
fetch: an HMAC over every entry of its directory (path, type, mode, size, sha256 of the content),
keyed from the build's own secrets (see `SealKey`), kept beside it in `<repo>.git.seal`. Before
git runs against a cached mirror, and before a tag or commit in it is believed without the
network, the seal must check against the mirror exactly as it is now: any added, removed, changed
or linked entry, or a seal made with another key, and the mirror is discarded and fetched again.

When the installer is pip (or Pipenv's pip) or uv, a mirror is partial: `clone --filter=blob:none`
(every commit and tree, no file: what pip's own clone asks GitHub for), then, with the key, every
file of the commits the install checks out, fetched by id (`_fill`). So the network and the cache
grow with what was asked for, not with history. uv's fetch names no filter: the installer's git
is told that each mirrored URL is a promisor remote with pip's filter (`Mirrors.promisors`), so
uv asks the mirror for what pip asks for and takes each file it checks out from it by id.
Shallow mirrors were measured and refused: uv's `git fetch` from a shallow repository rejects
every ref (`shallow roots are not allowed to be updated`), and git 2.39's `clone --filter` from
one loops in lazy fetches. Poetry, whose `git clone` takes no filter from config, gets a shallow
mirror instead: `clone --depth=1`, then `fetch --depth=1` of the commit asked for (see
`Fetcher._shallow_fetch`); a clone of it is shallow and checks that commit out. Submodules get full
mirrors (a partial or shallow one is discarded for them): `git submodule update` fetches histories.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import shlex
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykey.core import run
from deploykey.core.errors import UserError
from deploykey.fetch import sealedgit
from deploykey.manifests.requirements import GitRequirement

DIR = "mirrors"  # under the kit's part of the build cache
NOT_FETCHED = "not-fetched"
SAFE_PART = re.compile(r"^[A-Za-z0-9._~-]+$")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
OBJECT_ID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # SHA-1 or SHA-256
FETCH_KEY = "remote.origin.fetch"
# Later fetches update every branch and tag (and drop deleted ones), never GitHub's refs/pull/*.
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# A fetch may start `git gc --auto` (and `maintenance run --auto`), which by default goes on in the
# background after the fetch returns, rewriting packs while the seal is being made: run it in the
# foreground instead (git-config(1): gc.autoDetach, maintenance.autoDetach).
IN_FOREGROUND = ("-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false")
# What `git clone --bare` and deploykey write into a mirror's config, and nothing else.
MIRROR_KEYS = {
    "core.repositoryformatversion",
    "core.filemode",
    "core.bare",
    "core.logallrefupdates",
    "remote.origin.url",
    FETCH_KEY,
}
# A partial mirror's config adds these, with exactly these values: `clone --filter` writes the
# promisor settings (git 2.39 builtin/clone.c, partial_clone_register), deploykey allowFilter:
# the installer's `git clone --filter=blob:none` runs the mirror's upload-pack, which refuses a
# filter unless the repository allows it (git-config(1), uploadpack.allowFilter).
FILTER = "blob:none"
PARTIAL_KEYS = {
    "remote.origin.promisor": "true",
    "remote.origin.partialclonefilter": FILTER,
    "uploadpack.allowfilter": "true",
}
# What git says when the host ignores a filter (fetch-pack.c): the clone is then a full one.
NO_FILTER = "filtering not recognized by server"


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
    refs it holds afterwards (read only for a requirement that names no commit: the doctor reads
    them for a tag, a branch or HEAD)."""

    path: Path
    result: run.Result
    refs: Mapping[str, str]
    network: bool
    note: str = ""  # how it was fetched, when not as asked (a host that refused a partial clone)
    # Commits this fetch found in the mirror (each name it resolved, peeled to its commit): in it
    # for the rest of the build (a fetch adds objects; gc drops none this young).
    commits: frozenset[str] = frozenset()

    def has_commit(self, git: str, sha: str) -> bool:
        return sha in self.commits or holds_commit(git, self.path, sha)


@dataclass
class Fetcher:
    """Fetches requirements into their mirrors under `root`, one at a time per mirror (two
    packages of one repository are one fetch), several mirrors at once."""

    git: str
    env: Mapping[str, str]
    root: Path
    seal: SealKey | None = None  # None: no secret of the build's own, no cached mirror is used
    # Partial mirrors (history without its files, and every file of the commits the install
    # checks out) when the installer is pip (it clones with `--filter=blob:none`) or uv (told
    # to, see Mirrors.promisors). `git submodule update` fetches whole histories: full mirrors.
    partial: bool = False
    # Shallow mirrors (the commits asked for, each with its whole tree, no history behind it)
    # when the installer is Poetry: its `git clone` of a shallow mirror is shallow too, and its
    # `git checkout <commit>` needs only that commit (see `_shallow_fetch`).
    shallow: bool = False
    notes: dict[Path, str] = field(default_factory=dict)  # fetched otherwise than asked, and why
    locks: dict[Path, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    fetched: dict[Path, GitRequirement] = field(default_factory=dict)
    discarded: list[tuple[Path, str]] = field(default_factory=list)  # and why
    removed: list[tuple[Path, str]] = field(default_factory=list)  # by prune(), and why
    made: set[Path] = field(default_factory=set)  # directories the clones created
    checked: dict[Path, str | None] = field(default_factory=dict)  # why not trusted; None: sealed

    def tidy(self) -> None:
        """Removes the directories the clones created that hold nothing (every clone under them
        failed): after all fetches, as two clones that fail at once share their parents."""
        for directory in sorted(self.made, key=lambda path: len(path.parts), reverse=True):
            with contextlib.suppress(OSError):
                directory.rmdir()

    def prune(self) -> None:
        """After all fetches: removes what the installer's git would reach under the root besides
        the mirrors fetched now. ROOT/not-fetched must not exist (a private repository that was
        not fetched must fail, not be found there). The installer's URLs are rewritten to
        `ROOT/<host>/<repo>`, without `.git`, and git tries `<repo>/.git` and `<repo>` before
        `<repo>.git` (upload-pack's enter_repo), so a planted `acme/x` would shadow the mirror
        `acme/x.git`; and `insteadOf` matches URL prefixes, so `acme/x-extra` is reached too:
        every sibling whose name starts with a fetched mirror's is removed, unless it is a
        mirror whose seal checks."""
        missing = self.root / NOT_FETCHED
        if os.path.lexists(missing):
            self.discard(missing)
            self.removed.append((missing, "nothing may be there"))
        for path in list(self.fetched):
            stem = path.name.removesuffix(".git")
            for sibling in list(path.parent.iterdir()):
                name = sibling.name
                if (
                    sibling in self.fetched
                    or not name.startswith(stem)
                    or name.endswith(SEAL_SUFFIX)
                ):
                    continue
                mirror = sibling.with_name(name.removesuffix(".git") + ".git")
                why = _linked_parent(self.root, mirror) or (
                    check_seal(mirror, self.seal) if self.seal else AGENT_ONLY
                )
                if sibling != mirror or why is not None:
                    self.discard(sibling)
                    self.removed.append((sibling, why or "not a mirror deploykey keeps"))

    def needs_network(self, req: GitRequirement) -> bool:
        """Whether fetching `req` will ask its host: not when its mirror, sealed and untouched,
        already holds the commit or tag it names (a branch is always asked again)."""
        path = mirror_path(self.root, req)
        return not (
            path.is_dir()
            and self.distrust(path, req) is None
            and self._layout(path, req) is None
            and _settled(self.git, path, req)
        )

    def distrust(self, path: Path, req: GitRequirement) -> str | None:
        """Why the cached mirror at `path` may not be used, or None: its seal checks, with this
        build's key, against every entry it holds now, and its config is the one deploykey writes
        for this repository. Checked once a build (the fetch is the only writer meanwhile)."""
        with self.guard:
            if path in self.checked:
                return self.checked[path]
        if self.seal is None:
            why: str | None = AGENT_ONLY
        else:
            why = _linked_parent(self.root, path) or check_seal(path, self.seal)
        if why is None and not _untouched(self.git, path, req):
            why = "its settings are not those deploykey writes for this repository"
        with self.guard:
            self.checked[path] = why
        return why

    def fetch(self, req: GitRequirement) -> Fetched:
        path = mirror_path(self.root, req)
        with self.guard:
            lock = self.locks.setdefault(path, threading.Lock())
        with lock:
            network = True
            if os.path.lexists(path) and (why := self.distrust(path, req)) is not None:
                # Build code (it can write the build cache) may have planted files, links or
                # settings that a fetch with the keys would obey: such a mirror is never used.
                self.discard(path)
                self.discarded.append((path, why))
            if path.is_dir() and (why := self._layout(path, req)) is not None:
                self.discard(path)  # sound, but Poetry or a submodule needs its history
                self.discarded.append((path, why))
            if not path.is_dir():
                result = self._clone(req, path)
            elif _settled(self.git, path, req):
                network = False
                result = run.Result(("git", "cat-file", "-e", str(wanted(req))), 0, ())
            elif is_shallow(path):
                result = self._shallow_fetch(req, path)
                if not result.ok:
                    result = self._in_full(req, path)
            else:
                result = run.run(
                    sealedgit.argv(
                        self.git,
                        *IN_FOREGROUND,
                        "--git-dir",
                        str(path),
                        "fetch",
                        "--prune",
                        "--quiet",
                        "origin",
                    ),
                    env=self.env,
                    source=(req.host_port, req.repo),
                )
                _check_room(result, req, path)
            commit = wanted(req) or ""
            # A locked commit and HEAD, peeled in one cat-file: the check below, and (unless it
            # fetches) the commits the fill needs (_checked_out reads the same two names).
            peeled: list[str | None] | None = None
            if result.ok and network and not is_shallow(path) and FULL_SHA.match(commit):
                if req.commit:
                    peeled = _commits(self.git, path, [req.commit, "HEAD"])
                    held = peeled[0] is not None
                else:
                    held = holds_commit(self.git, path, commit)
            else:
                held = True
            if not held:
                # On no branch or tag any more (a force-push): ask for the commit itself, kept
                # under a ref of its own so that git's gc never drops it.
                peeled = None
                refspec = f"{commit}:refs/deploykey/{commit}"
                run.run(
                    sealedgit.argv(
                        self.git,
                        *IN_FOREGROUND,
                        "--git-dir",
                        str(path),
                        "fetch",
                        "--quiet",
                        "origin",
                        refspec,
                    ),
                    env=self.env,
                    source=(req.host_port, req.repo),
                )
            seen: list[str] = []
            if result.ok and network and is_partial(path):
                result, seen = self._fill(req, path, result, peeled)
            if network and path.is_dir():
                # What git wrote, run by deploykey on a mirror it had verified (or a new clone),
                # is deploykey's: sealed now, for the next build to check.
                _promisors_readable(path)
                write_seal(path, self.seal)
                with self.guard:  # and trusted for the rest of this build, sealed or not
                    self.checked[path] = None
            if result.ok:
                with self.guard:
                    self.fetched.setdefault(path, req)
            refs = _refs(self.git, path) if result.ok and not req.commit else {}
            with self.guard:
                note = self.notes.get(path, "") if network else ""
            return Fetched(path, result, refs, network, note, frozenset(seen))

    def _wants_partial(self, req: GitRequirement) -> bool:
        """pip clones a requirement's repository with `--filter=blob:none` (pip
        `_internal/vcs/git.py`, fetch_new), but a submodule with `git submodule update`, which
        asks for whole histories."""
        return self.partial and ".gitmodules" not in req.file

    def _layout(self, path: Path, req: GitRequirement) -> str | None:
        """Why a sound mirror cannot serve this build: a partial one when the installer
        (Poetry) or `git submodule update` needs every file of the history; a shallow one when
        the installer is not Poetry (uv's fetch refuses it, pip's filtered clone of it loops) or
        a submodule needs history. A full mirror serves every installer."""
        if is_partial(path) and not self._wants_partial(req):
            return PARTIAL_NOT_ENOUGH
        if is_shallow(path) and not self._wants_shallow(req):
            return SHALLOW_NOT_ENOUGH
        return None

    def _wants_shallow(self, req: GitRequirement) -> bool:
        """Poetry, but not a submodule (`git clone --recurse-submodules` checks out each one's
        gitlink commit, which a depth-1 fetch of the superproject does not bring)."""
        return self.shallow and ".gitmodules" not in req.file

    def _shallow_fetch(self, req: GitRequirement, path: Path) -> run.Result:
        """Brings the commit asked for into a shallow mirror, with its tree and no history
        (`fetch --depth=1`), under a ref the installer's clone copies: Poetry's system git client
        runs `git clone --recurse-submodules -- <url>` then `git checkout <revision>`, the
        lockfile's commit (python-poetry/poetry src/poetry/vcs/git/system.py, SystemGit; the
        revision is the lock's resolved_reference, installation/executor.py), and a clone copies
        refs/heads/* and refs/tags/* only, so a commit held under any other ref is not in it
        ("is not present on remote"). A lockfile's commit is kept as the tag
        `deploykey/<commit>`; a tag or branch under its own name (read from FETCH_HEAD, which
        says which one git found, in git's order: tags first); the default branch as it is.
        git 2.39 upload-pack serves a commit by id over protocol v2, as GitHub does."""
        name = wanted(req)
        if name is None:
            head = _head_branch(path)
            refspec = f"+{head}:{head}" if head else "HEAD"
        elif FULL_SHA.match(name):
            refspec = f"+{name}:{PIN_PREFIX}{name}"
        else:
            refspec = name
        result = run.run(
            sealedgit.argv(
                self.git,
                *IN_FOREGROUND,
                "--git-dir",
                str(path),
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "--recurse-submodules=no",
                "origin",
                refspec,
            ),
            env=self.env,
            source=(req.host_port, req.repo),
        )
        _check_room(result, req, path)
        if result.ok and refspec == name:
            _keep_fetched(self.git, path, name)
        return result

    def _fill(
        self,
        req: GitRequirement,
        path: Path,
        result: run.Result,
        peeled: Sequence[str | None] | None = None,
    ) -> tuple[run.Result, list[str]]:
        """Brings every file of the commits the install checks out into a partial mirror, in one
        fetch of exactly the missing objects, while the key is there: the installer's clone
        checks out the mirror's HEAD, then the commit asked for. The objects are asked for by
        id, as git's own lazy fetch does (promisor-remote.c, fetch_objects: `fetch --filter
        --stdin`); a host that refuses that gets the mirror fetched in full instead. Also the
        commits checked out (none after a fetch in full). `peeled`: the lockfile's commit and HEAD,
        already peeled by the caller (`_commits`)."""
        # Resolved once: the fill fetches objects by id into no ref (no refspec, no FETCH_HEAD)
        # and leaves HEAD alone, so the same names name the same commits after it.
        commits = _checked_out(self.git, path, req, peeled)
        missing = _missing(self.git, path, commits)
        if missing:
            filled = run.run(
                sealedgit.argv(
                    self.git,
                    *IN_FOREGROUND,
                    "-c",
                    "fetch.negotiationAlgorithm=noop",
                    "--git-dir",
                    str(path),
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--recurse-submodules=no",
                    f"--filter={FILTER}",
                    "--stdin",
                    "origin",
                ),
                env=self.env,
                stdin="".join(sha + "\n" for sha in missing).encode(),
                source=(req.host_port, req.repo),
            )
            _check_room(filled, req, path)
            if _missing(self.git, path, commits):
                self.discard(path)
                with self.guard:
                    self.notes[path] = FETCHED_IN_FULL.format(why="it did not send files by id")
                return self._clone(req, path, full=True), []
        return result, commits

    def _clone(self, req: GitRequirement, path: Path, full: bool = False) -> run.Result:
        """A new bare mirror, made beside its place and renamed into it: a failed or interrupted
        clone leaves nothing half-written where a later build would trust it. Partial when the
        installer allows it (`_fill` then brings the files the install needs)."""
        partial_clone = self._wants_partial(req) and not full
        shallow_clone = self._wants_shallow(req) and not full
        clone = ["clone", "--bare", "--quiet", *([f"--filter={FILTER}"] if partial_clone else [])]
        clone += ["--depth=1"] if shallow_clone else []  # the default branch's commit only
        with self.guard:
            self.made.update(parent for parent in path.parents if not parent.exists())
            path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        if partial.is_symlink():  # planted: git would clone wherever it points
            partial.unlink()
        shutil.rmtree(partial, ignore_errors=True)
        try:
            result = run.run(
                sealedgit.argv(self.git, *clone, "--", req.remote, str(partial)),
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
        # A bare clone records no refspec of its own; a partial mirror serves filtered clones.
        _add_settings(partial, partial_clone)
        if partial_clone and NO_FILTER in result.text:
            with self.guard:  # git cloned in full, and kept the promisor settings: harmless
                self.notes[path] = FETCHED_IN_FULL.format(why="it does not filter (allowFilter)")
        partial.rename(path)
        if shallow_clone and not _settled(self.git, path, req):
            result = self._shallow_fetch(req, path)
            if not result.ok:
                result = self._in_full(req, path)
        return result

    def _in_full(self, req: GitRequirement, path: Path) -> run.Result:
        """A shallow mirror that could not get what was asked for by itself (a short commit id:
        a host serves a commit by its full id only) is cloned in full, as before shallow
        mirrors: a full mirror serves Poetry too, and a real failure (the host, the key) fails
        the full clone the same way."""
        self.discard(path)
        with self.guard:
            self.notes[path] = SHALLOW_IN_FULL.format(name=wanted(req) or "HEAD")
        return self._clone(req, path, full=True)

    def discard(self, path: Path) -> None:
        """Removes a mirror that may not be used, and its seal; a link (at its place or above it,
        under the root) is removed itself, never followed."""
        linked = next(
            (p for p in [path, *path.parents] if p.is_relative_to(self.root) and p.is_symlink()),
            None,
        )
        if linked is not None:
            linked.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        seal_path(path).unlink(missing_ok=True)


# ---------------------------------------------------------------- the seal

SEAL_SUFFIX = ".seal"
SEAL_FORMAT = "deploykey mirror seal v1"
SEAL_MAX = 4096  # bytes: a seal is three short lines; anything longer is not one
CHUNK = 1 << 20
NO_SEAL = "it has no seal (kept by an older deploykey, or its seal was removed)"
OTHER_KEY = "not sealed by this build's key (a rotated key, or a seal written by build code)"
CHANGED = "changed since it was sealed (by build code?)"
SHALLOW_NOT_ENOUGH = (
    "a shallow mirror (the commits asked for, no history), and this build's installer or a "
    "submodule needs history"
)
SHALLOW_IN_FULL = ", in full: {name} could not be fetched by itself into a shallow mirror"
PARTIAL_NOT_ENOUGH = (
    "a partial mirror (history without its files), and this build's installer or a submodule "
    "needs every file of the history"
)
FETCHED_IN_FULL = ", in full: the host refused a partial fetch ({why})"
AGENT_ONLY = (
    "this build has no secret of its own to check a seal with (an ssh agent's key is never seen "
    "by deploykey), so no cached mirror is trusted"
)


@dataclass(frozen=True)
class SealKey:
    """The key that seals mirrors, derived from the build's own secrets: deploy keys, a GitHub
    App's private key, tokens (never a token minted during the build: it changes every build).
    Build code never had them, so it can neither forge a seal nor check a guess. HKDF (RFC 5869)
    with SHA-256: extract with a fixed salt, expand once per use with its own label (domain
    separation): `mac` keys the HMAC, `ident` (public) names the key in the seal, so that a
    rotated key reads as such and not as a change."""

    mac: bytes = field(repr=False)
    ident: str

    @classmethod
    def derive(cls, secrets: Sequence[bytes]) -> SealKey | None:
        if not secrets:
            return None
        material = b"".join(len(s).to_bytes(8, "big") + s for s in sorted(set(secrets)))
        prk = hmac.new(b"deploykey/mirror-seal/v1", material, hashlib.sha256).digest()

        def expand(label: bytes) -> bytes:
            return hmac.new(prk, label + b"\x01", hashlib.sha256).digest()

        return cls(expand(b"mac"), expand(b"ident").hex()[:16])


def _promisors_readable(mirror: Path) -> None:
    """git writes a partial mirror's `.promisor` files 0600 and its packs 0444 (umask 022):
    each is made readable as its pack is, so that what `deploykey fetch` made can be read by
    another user, the build user of a keyless CNB build (README's recipe mounts it read-only).
    They hold ref names and commit ids, as the packs do; no secret."""
    for promisor in (mirror / "objects" / "pack").glob("*.promisor"):
        pack = promisor.with_suffix(".pack")
        if promisor.is_symlink() or pack.is_symlink() or not pack.is_file():
            continue
        promisor.chmod(stat.S_IMODE(pack.stat().st_mode))


def seal_path(mirror: Path) -> Path:
    """Beside the mirror, never inside its git dir (git would read it as its own)."""
    return mirror.with_name(mirror.name + SEAL_SUFFIX)


def digest(mirror: Path, key: SealKey) -> str | None:
    """The HMAC of every entry under `mirror`, in order: type, mode, size, sha256 of a file's
    content, and the path; None if it holds anything but directories and regular files (a link,
    a fifo, a device): git writes none of those in a bare repository. Any file layout git writes
    (promisor packs, `shallow`, commit-graphs, ...) is covered as it is, not a list of names."""
    mac = hmac.new(key.mac, SEAL_FORMAT.encode(), hashlib.sha256)

    def field_(data: bytes) -> None:
        mac.update(len(data).to_bytes(8, "big") + data)

    pending = [mirror]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            return None
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                return None
            relative = os.fsencode(os.path.relpath(entry.path, mirror))
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISDIR(info.st_mode):
                field_(b"d %o" % mode)
                field_(relative)
                pending.append(Path(entry.path))
            elif stat.S_ISREG(info.st_mode):
                content = _sha256(Path(entry.path))
                if content is None:
                    return None
                field_(b"f %o %d " % (mode, info.st_size) + content)
                field_(relative)
            else:
                return None
    return mac.hexdigest()


def _sha256(path: Path) -> bytes | None:
    """A regular file's sha256, opened without following a link and without blocking on a fifo
    that replaced it after the listing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        hashed = hashlib.sha256()
        while chunk := file.read(CHUNK):
            hashed.update(chunk)
    return hashed.digest()


def write_seal(mirror: Path, key: SealKey | None) -> None:
    """Seal the mirror as it is now: a new file beside it, renamed over the old seal (a reader
    sees the old seal or the new one, never half of one; the rename replaces a planted link
    instead of writing through it). With no key, a mirror that holds what cannot be sealed, or
    a seal that cannot be written (a full disk), an old seal is removed: the next build fetches
    the mirror again, which costs time, never trust."""
    target = seal_path(mirror)
    sealed = digest(mirror, key) if key is not None else None
    temporary: str | None = None
    try:
        if key is None or sealed is None:
            target.unlink(missing_ok=True)
            return
        fd, temporary = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
        with os.fdopen(fd, "w") as file:
            file.write(f"{SEAL_FORMAT}\nkey {key.ident}\nhmac {sealed}\n")
        Path(temporary).replace(target)
    except OSError:
        with contextlib.suppress(OSError):
            target.unlink(missing_ok=True)
        if temporary is not None:
            with contextlib.suppress(OSError):
                Path(temporary).unlink(missing_ok=True)


def check_seal(mirror: Path, key: SealKey) -> str | None:
    """None when the mirror's seal was made with `key` over exactly what the mirror holds now;
    else why not (NO_SEAL, OTHER_KEY, CHANGED)."""
    try:
        fd = os.open(seal_path(mirror), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return NO_SEAL
    with os.fdopen(fd, "rb") as file:
        text = file.read(SEAL_MAX + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    lines = text.decode("ascii", "replace").splitlines()
    if len(text) > SEAL_MAX or len(lines) != 3 or lines[0] != SEAL_FORMAT:
        return NO_SEAL
    if lines[1] != f"key {key.ident}":
        return OTHER_KEY
    if mirror.is_symlink() or not mirror.is_dir():
        return CHANGED
    current = digest(mirror, key)
    if current is None or not hmac.compare_digest(lines[2], f"hmac {current}"):
        return CHANGED
    return None


def _linked_parent(root: Path, path: Path) -> str | None:
    """A directory between the root and the mirror that is a link: the mirror would be read
    (and written) wherever it points."""
    for parent in reversed(path.parents):
        if parent.is_relative_to(root) and parent != root and parent.is_symlink():
            return f"{parent} is a link ({CHANGED})"
    return None


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


def _add_settings(clone: Path, partial: bool) -> None:
    """What deploykey adds to a new clone's config (`_untouched` allows these and nothing else):
    the refspecs (REFSPECS), and for a partial mirror `uploadpack.allowFilter`. Appended as
    sections of their own, in git's syntax (git-config(1): a section may appear more than once,
    its entries add up), instead of three `git config` runs: `git config --list` reads exactly
    what those runs wrote, in the same order. The clone is the one git has just made in a new
    directory beside the mirror (no build code runs during the fetch); its config is opened
    without following a link all the same."""
    lines = ['[remote "origin"]'] + [f"\tfetch = {refspec}" for refspec in REFSPECS]
    lines += ["[uploadpack]", "\tallowFilter = true"] if partial else []
    fd = os.open(clone / "config", os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
    with os.fdopen(fd, "r+b") as config:
        size = os.fstat(fd).st_size
        ended = size == 0 or os.pread(fd, 1, size - 1) == b"\n"  # git ends its lines; if not
        config.write(("" if ended else "\n").encode() + "\n".join(lines).encode() + b"\n")


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
    partial = [(key.lower(), value) for key, _, value in entries if key.lower() in PARTIAL_KEYS]
    if any(PARTIAL_KEYS[key] != value for key, value in partial):
        return False
    keys -= set(PARTIAL_KEYS)
    urls = [value for key, _, value in entries if key.lower() == "remote.origin.url"]
    fetches = sorted(value for key, _, value in entries if key.lower() == FETCH_KEY)
    forms = {url.removesuffix(".git") for url in [req.remote, *url_forms(req)]}
    known = len(urls) == 1 and urls[0].removesuffix(".git") in forms
    return keys <= MIRROR_KEYS and known and fetches == sorted(REFSPECS)


def wanted(req: GitRequirement) -> str | None:
    """What must be in the mirror: the commit a lockfile pins, else the ref asked for."""
    return req.commit or req.ref


def _settled(git: str, path: Path, req: GitRequirement) -> bool:
    """A full commit the mirror has, or a tag it has, needs no network: commits never change, and
    a tag is taken to name one commit (moving a tag needs a new tag). A branch, the default
    branch, or anything missing is fetched again. In a partial mirror, also every file of what
    the install checks out must be there."""
    ref = wanted(req)
    if ref is None:
        return False
    if FULL_SHA.match(ref) and is_shallow(path):
        # Only a commit at a ref the installer's clone copies (see Fetcher._shallow_fetch).
        held = ref in _refs(git, path).values()
    elif FULL_SHA.match(ref):
        held = holds_commit(git, path, ref)
    else:
        held = (path / "refs" / "tags" / ref).is_file() or _packed_tag(path, ref)
    return held and not (is_partial(path) and _missing(git, path, _checked_out(git, path, req)))


def is_shallow(path: Path) -> bool:
    """A mirror made by `clone --depth`: git lists the commits whose parents it does not have in
    its `shallow` file (gitrepository-layout(5)). The seal covers that file."""
    return (path / "shallow").is_file()


PIN_PREFIX = "refs/tags/deploykey/"  # a lockfile's commit in a shallow mirror


def _head_branch(path: Path) -> str | None:
    """The branch a bare mirror's HEAD names (`ref: refs/heads/main`), if it names one."""
    try:
        head = (path / "HEAD").read_text().strip()
    except OSError:
        return None
    name = head.removeprefix("ref: ")
    return name if name != head and name.startswith("refs/heads/") else None


def _keep_fetched(git: str, path: Path, name: str) -> None:
    """A tag or branch fetched by its name into FETCH_HEAD (`<sha>\\t\\t(tag|branch) '<name>'
    of <url>`, git 2.39 builtin/fetch.c, append_fetch_head) kept under the ref it is."""
    try:
        line = (path / "FETCH_HEAD").read_text().partition("\n")[0]
    except OSError:
        return
    sha, _, what = line.partition("\t\t")
    kind = what.partition(" ")[0]
    prefix = {"tag": "refs/tags/", "branch": "refs/heads/"}.get(kind)
    if prefix and FULL_SHA.match(sha):
        _local([git, "--git-dir", str(path), "update-ref", f"{prefix}{name}", sha])


def is_partial(path: Path) -> bool:
    """A mirror made by `clone --filter`: git marks its packs `.promisor` and its remote a
    promisor (git 2.39 builtin/clone.c). Read from the config file itself (the seal covers it)."""
    try:
        text = (path / "config").read_text()
    except OSError:
        return False
    return "partialclonefilter" in text.lower()


def _checked_out(
    git: str, path: Path, req: GitRequirement, peeled: Sequence[str | None] | None = None
) -> list[str]:
    """The commits an installer's clone of the mirror checks out: its HEAD (`git clone` checks
    out the default branch first), and the commit the requirement names (a lockfile's pin, else
    its tag or branch, read in doctor._check_ref's order). `peeled`: `_commits` of exactly
    these names and HEAD, when the caller has it."""
    names = [req.commit] if req.commit else []
    if req.ref and not req.commit:
        names = [f"refs/tags/{req.ref}", f"refs/heads/{req.ref}", req.ref]
    *found, head = peeled if peeled is not None else _commits(git, path, [*names, "HEAD"])
    asked = next(filter(None, found), None)
    return list(dict.fromkeys(sha for sha in (asked, head) if sha))


def _commits(git: str, path: Path, names: Sequence[str]) -> list[str | None]:
    """The commit each name (a commit id, a ref, HEAD) peels to, or None: one `cat-file
    --batch-check` for all of them, which reads each line as `rev-parse --verify` reads its
    argument (get_oid_with_context), instead of one `rev-parse` each. A name that is not one line,
    or an answer that is not one line per name, is asked of `rev-parse` instead."""
    if not any("\n" in name or "\r" in name for name in names):
        result = _local(
            [git, "--git-dir", str(path), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            stdin="".join(f"{name}^{{commit}}\n" for name in names).encode(),
        )
        if result.ok and len(result.lines) == len(names):
            return [_peeled(line) for line in result.lines]
    return [_commit(git, path, name) for name in names]


def _peeled(line: str) -> str | None:
    """A line of `cat-file --batch-check=%(objectname) %(objecttype)` for `<name>^{commit}`:
    `<sha> commit`, or `<name>^{commit} missing` (or `ambiguous`)."""
    sha, _, kind = line.rpartition(" ")
    return sha if kind == "commit" and OBJECT_ID.match(sha) else None


def _commit(git: str, path: Path, name: str) -> str | None:
    result = _local(
        [git, "--git-dir", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options"]
        + [f"{name}^{{commit}}"]
    )
    return result.lines[0] if result.ok and result.lines else None


def _missing(git: str, path: Path, commits: Sequence[str]) -> list[str]:
    """The objects of these commits' trees a partial mirror lacks (not their history), listed
    without fetching any (`--missing=print`; a reading of a mirror has no protocol anyway)."""
    if not commits:
        return []
    result = _local(
        [
            git,
            "--git-dir",
            str(path),
            "rev-list",
            "--objects",
            "--no-walk",
            "--missing=print",
            *commits,
        ],
    )
    if not result.ok:
        return list(commits)  # unreadable: the fill fails and the mirror is fetched in full
    return [line[1:] for line in result.lines if line.startswith("?")]


def _packed_tag(path: Path, ref: str) -> bool:
    try:
        text = (path / "packed-refs").read_text()
    except OSError:
        return False
    return f" refs/tags/{ref}\n" in text


def _local(argv: Sequence[str], stdin: bytes = b"") -> run.Result:
    """A read of a mirror on disk: a short git run straight through subprocess (run.capture), not
    through `sh`, whose start costs tens of milliseconds a call in a build that makes dozens.
    Sealed like the fetch (the key dir exists while it runs), and with no protocol at all."""
    return run.capture(sealedgit.argv(*argv), env=sealedgit.env(), stdin=stdin)


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
        return entries + self.promisors()

    def promisors(self) -> list[tuple[str, str]]:
        """Each repository's URLs made promisor remotes with pip's filter, so that uv's fetch of
        a partial mirror asks for what pip's clone asks for, and takes the rest from the mirror
        when it checks out. uv 0.13 runs `git init`, then `git fetch --force --update-head-ok
        <url> +<commit>:refs/commit/<commit>`, then `clone --local` and `reset --hard <commit>`
        (astral-sh/uv crates/uv-git/src/git.rs, fetch_with_cli, GitCheckout::clone_into): no
        filter, so a partial mirror's upload-pack would need every file of the history, which
        it cannot fetch ("lazy fetching disabled"). git 2.39 names the remote of `git fetch
        <url>` by its URL (remote.c, remotes_remote_get_1); any `remote.<name>.promisor` makes
        <name> a promisor remote (promisor-remote.c, promisor_remote_config; git-config(1)); a
        fetch from one inherits its `partialclonefilter` (builtin/fetch.c,
        fetch_one_setup_partial); and a missing object is then fetched by id from it (lazy
        fetch), here from the mirror, through the same `insteadOf`: no network, and by id, so
        index-pack checks every object against its name. (Seen with uv 0.13.9 under GIT_TRACE:
        its `rev-parse <commit>^0` in the new database already fetches the commit that way, with
        its history's commits and trees, and uv then skips its own fetch; `reset --hard` fetches
        the commit's files.) The scp-like form is left out: uv
        takes `git+ssh://` URLs only. A full mirror ignores the filter (upload-pack without
        `uploadpack.allowFilter` sends everything), so every mirror gets these settings, and a
        uv cache made partial stays served whatever the next build's mirror is.
        A lazy fetch asks each promisor remote in turn, in the order read, until one has the
        objects (promisor-remote.c, promisor_remote_get_direct): a wrong mirror costs a failed
        fetch (about 6 ms here), so each repository's URL as the app wrote it (the one uv
        fetches) comes first, then the other forms."""
        # Not for a shallow mirror (Poetry's): with its URL a promisor remote, the mirror's own
        # pack-objects, serving the installer's clone, asks that remote (the mirror itself,
        # through insteadOf) for what lies behind its shallow commits, again and again (seen
        # with git 2.39.5: `git clone` of a shallow mirror never returned).
        served = [(req, path) for req, path in self.repositories if not is_shallow(path)]
        written = [req.remote for req, _path in served]
        others = [
            name
            for req, _path in served
            for form in url_forms(req)
            if "://" in form
            for name in (form, form + ".git")
        ]
        entries: list[tuple[str, str]] = []
        for name in dict.fromkeys(written + others):
            entries.append((f"remote.{name}.promisor", "true"))
            entries.append((f"remote.{name}.partialCloneFilter", FILTER))
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
    ours = {
        (name[len("url.") : -len(".insteadOf")], form)
        for name, form in fetched.settings()
        if name.startswith("url.")
    }
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
