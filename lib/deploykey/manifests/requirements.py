"""Reading requirements files for the git dependencies fetched over ssh, as pip will read them.

Only what matters for ssh is parsed: logical lines (continuations joined, comments dropped), `-r` /
`-c` includes relative to the including file, and `git+ssh://` URLs. The scp-like form with a colon
after the host (`git+ssh://git@github.com:acme/x.git`, `git+git@github.com:acme/x.git`) is not a URL
pip understands, so it is reported with the corrected line instead of failing deep inside pip.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deploykey.core.errors import UserError

SSH_URL = re.compile(
    r"git\+ssh://(?:(?P<user>[^@/\s]+)@)?(?P<host>[^/:@\s]+)(?::(?P<port>[^/\s]*))?"
    r"(?P<path>/[^@#\s]*)(?:@(?P<ref>[^#\s]+))?"
)
HTTPS_URL = re.compile(
    r"git\+(?P<scheme>https?)://(?:[^@/\s]+@)?(?P<host>[^/:@\s]+)(?::(?P<port>[0-9]+))?"
    r"(?P<path>/[^@#\s]*)(?:@(?P<ref>[^#\s]+))?"
)
SCP_LIKE = re.compile(
    r"git\+(?P<user>[A-Za-z0-9._-]+)@(?P<host>[^:/\s]+):(?P<path>[^@#\s]+)(?:@(?P<ref>[^#\s]+))?"
)
NAMED = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*@\s*$")
EGG = re.compile(r"^#(?:[^\s]*&)?egg=(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)")
EDITABLE_VCS = re.compile(r"^(?:-e|--editable)(?:\s+|=)(?:git|hg|svn|bzr)\+")
OTHER_VCS_SSH = re.compile(r"(?:hg|svn|bzr)\+ssh://")
INCLUDE = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+)(?P<file>\S+)")
# A user name ssh can only take as one: never an option (`-o...`), nothing a shell or ssh_config
# reads specially.
SSH_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
# A part of a repository path, as the mirror's path and git's command line can take it: never
# `.` or `..` (the mirror would leave the build cache), never an option (`--upload-pack=...`).
REPO_PART = re.compile(r"[A-Za-z0-9._~][A-Za-z0-9._~-]*")
COMMENT = re.compile(r"(?:^|\s)#.*$")  # linear: not (^|\s+)#, quadratic on a line of spaces
# Files an app keeps its requirements in, for detection (pip and Heroku conventions).
DETECT_GLOBS = ("requirements*.txt", "requirements/*.txt", "requirements/*.in", "requirements*.in")


@dataclass(frozen=True)
class GitRequirement:
    file: str
    line: int
    url: str
    host: str
    port: int
    user: str | None
    repo: str
    ref: str | None
    scheme: str = "ssh"
    name: str | None = None  # the project name, when the line gives it (`name @ URL`, `#egg=name`)
    fragment: str = ""  # `#subdirectory=...` and the like, after the URL
    commit: str | None = None  # the commit a lockfile pins (uv.lock, poetry.lock, ...)
    subdirectory: str | None = None  # the project's directory in the repository, if not its root

    def pinned(self, commit: str) -> str:
        """This requirement at a commit: `name @ URL@commit#fragment`."""
        base = self.url[: -len(self.ref) - 1] if self.ref else self.url
        return f"{self.name} @ {base}@{commit}{self.fragment}"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def remote(self) -> str:
        """The URL git fetches: no `git+`, no ref, no credentials."""
        default = {"ssh": 22, "https": 443, "http": 80}[self.scheme]
        port = f":{self.port}" if self.port != default else ""
        user = f"{self.user}@" if self.user and self.scheme == "ssh" else ""
        path = self.url.split("://", 1)[1].split("/", 1)[1].split("@")[0].split("#")[0]
        return f"{self.scheme}://{user}{self.host}{port}/{path}"

    @property
    def host_port(self) -> str:
        """host, or host:port when the port is not the scheme's own (how git names it to helpers)."""
        default = {"ssh": 22, "https": 443, "http": 80}[self.scheme]
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def written_hosts(self) -> tuple[str, ...]:
        """The host as compared (lower case) and as the URL spells it (`GitHub.COM`): git matches
        `insteadOf` prefixes case-sensitively, so a rule for one spelling misses the other."""
        start = self.url.lower().find(self.host)
        written = self.url[start : start + len(self.host)] if start >= 0 else self.host
        return tuple(dict.fromkeys([self.host, written]))


@dataclass
class Requirements:
    files: list[str] = field(default_factory=list)
    git: list[GitRequirement] = field(default_factory=list)
    https: list[GitRequirement] = field(default_factory=list)
    problems: list[UserError] = field(default_factory=list)
    other_ssh: list[str] = field(default_factory=list)
    editable_vcs: list[str] = field(default_factory=list)  # `-e git+...` lines (pip only)

    @property
    def hosts(self) -> list[tuple[str, int]]:
        """The hosts reached over ssh."""
        return sorted({(req.host, req.port) for req in self.git})

    @property
    def uses_ssh(self) -> bool:
        return bool(self.git or self.problems or self.other_ssh)


def read(app_dir: Path, name: str) -> Requirements:
    """Parse `name` (relative to app_dir) and everything it includes."""
    found = Requirements()
    _read(app_dir, app_dir / name, found, seen=set())
    return found


def detect(app_dir: Path) -> tuple[list[str], Requirements]:
    """The requirements files an app has, and what they hold, for bin/detect."""
    found = Requirements()
    seen: set[Path] = set()
    for pattern in DETECT_GLOBS:
        for path in sorted(app_dir.glob(pattern)):
            _read(app_dir, path, found, seen)
    return found.files, found


def _read(app_dir: Path, path: Path, found: Requirements, seen: set[Path]) -> None:
    try:
        resolved = path.resolve()
        if resolved in seen or not path.is_file():
            return
    except (OSError, ValueError):
        # `-r` naming what cannot be a file (a name too long, a NUL byte): skipped like a missing
        # include; pip reports it when it installs.
        return
    seen.add(resolved)
    name = label(app_dir, path)
    found.files.append(name)
    for number, text in _logical_lines(path.read_text(encoding="utf-8", errors="replace")):
        include = INCLUDE.match(text)
        if include:
            _read(app_dir, path.parent / include.group("file"), found, seen)
            continue
        _parse_line(name, number, text, found)


def label(app_dir: Path, path: Path) -> str:
    try:
        return str(path.relative_to(app_dir))
    except ValueError:
        return str(path)


def read_text(label: str, text: str) -> Requirements:
    """A requirements file's text from elsewhere (a fetched repository); includes are not followed."""
    found = Requirements(files=[label])
    for number, line in _logical_lines(text):
        if not INCLUDE.match(line):
            _parse_line(label, number, line, found)
    return found


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """pip's line handling: join `\\` continuations, then drop comments (`#` after whitespace)."""
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        text = COMMENT.sub("", pending + raw).strip()
        pending = ""
        if text:
            yield start, text
    if pending.strip():
        yield start, COMMENT.sub("", pending).strip()


def unsafe(repo: str, *refs: str | None) -> tuple[str, str] | None:
    """(what, value) when a repository path or a ref (or a lockfile's commit) cannot be fetched
    safely as written."""
    if not all(REPO_PART.fullmatch(part) and part not in (".", "..") for part in repo.split("/")):
        return "repository path", repo
    for ref in refs:
        if ref is not None and (ref.startswith("-") or ".." in ref):
            return "ref", ref
    return None


def unsafe_problem(label: str, line: int, url: str, found: tuple[str, str]) -> UserError:
    part, value = found
    return UserError("requirements::unsafe", file=label, line=line, url=url, part=part, value=value)


def _parse_line(label: str, number: int, text: str, found: Requirements) -> None:
    for match in SSH_URL.finditer(text):
        port = match.group("port")
        if port and not is_port(port):
            fixed = f"git+ssh://{_user(match)}{match.group('host')}/{port}{match.group('path')}"
            fixed += f"@{match.group('ref')}" if match.group("ref") else ""
            found.problems.append(_scp_problem(label, number, match.group(0), port, fixed))
            continue
        user = match.group("user")
        if user is not None and not SSH_USER.fullmatch(user):
            fixed = f"git+ssh://git@{match.group('host')}{match.group('path')}"
            fixed += f"@{match.group('ref')}" if match.group("ref") else ""
            found.problems.append(ssh_user_problem(label, number, match.group(0), user, fixed))
            continue
        bad = unsafe(_repo(match.group("path")), match.group("ref"))
        if bad is not None:
            found.problems.append(unsafe_problem(label, number, match.group(0), bad))
            continue
        found.git.append(
            GitRequirement(
                file=label,
                line=number,
                url=match.group(0),
                host=match.group("host").lower(),
                port=int(port) if port else 22,
                user=match.group("user"),
                repo=_repo(match.group("path")),
                ref=match.group("ref"),
                name=_name(text, match),
                fragment=_fragment(text, match),
            )
        )
    for match in HTTPS_URL.finditer(text):
        scheme = match.group("scheme")
        bad = unsafe(_repo(match.group("path")), match.group("ref"))
        if bad is not None:
            found.problems.append(unsafe_problem(label, number, match.group(0), bad))
            continue
        found.https.append(
            GitRequirement(
                file=label,
                line=number,
                url=match.group(0),
                host=match.group("host").lower(),
                port=int(match.group("port") or (443 if scheme == "https" else 80)),
                user=None,
                repo=_repo(match.group("path")),
                ref=match.group("ref"),
                scheme=scheme,
                name=_name(text, match),
                fragment=_fragment(text, match),
            )
        )
    for match in SCP_LIKE.finditer(text):
        fixed = f"git+ssh://{match.group('user')}@{match.group('host')}/{match.group('path')}"
        fixed += f"@{match.group('ref')}" if match.group("ref") else ""
        found.problems.append(
            _scp_problem(label, number, match.group(0), match.group("path"), fixed)
        )
    if OTHER_VCS_SSH.search(text):
        found.other_ssh.append(f"{label}:{number}")
    if EDITABLE_VCS.match(text):
        found.editable_vcs.append(f"{label}:{number}")


def _name(text: str, match: re.Match[str]) -> str | None:
    """`name @ URL` (PEP 508), or `URL#egg=name`."""
    before = NAMED.match(text[: match.start()])
    if before:
        return before.group("name")
    egg = EGG.match(text[match.end() :])
    return egg.group("name") if egg else None


def _fragment(text: str, match: re.Match[str]) -> str:
    rest = text[match.end() :]
    return rest.split()[0] if rest.startswith("#") else ""


def is_port(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes `²`, which int() refuses."""
    return text.isascii() and text.isdigit()


def _user(match: re.Match[str]) -> str:
    return f"{match.group('user')}@" if match.group("user") else ""


def _repo(path: str) -> str:
    repo = path.strip("/")
    return repo[:-4] if repo.endswith(".git") else repo


def ssh_user_problem(label: str, line: int, url: str, user: str, fixed: str) -> UserError:
    """An ssh option (`-oProxyCommand=...`) where a URL has its user: refused before any ssh."""
    return UserError(
        "requirements::ssh-user", file=label, line=line, url=url, user=user, fixed=fixed
    )


def _scp_problem(label: str, number: int, url: str, port: str, fixed: str) -> UserError:
    return UserError(
        "requirements::scp-url", file=label, line=number, url=url, port=port, fixed=fixed
    )
