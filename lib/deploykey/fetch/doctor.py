"""The doctor: for every private requirement, which key and host it will use, and whether it works.

Each requirement is fetched the way pip will fetch it (`git ls-remote` through the router, with the
build's git settings), so every cause of failure shows up before an install starts, in plain words
with its fix: a host key mismatch, a key the host refuses, a key valid for another repository, a ref
that does not exist, a host that cannot be reached, a token refused, the `github.com:org` typo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from deploykey.core import errors, output, run, trust
from deploykey.core.errors import UserError
from deploykey.fetch import discover, mirrors
from deploykey.fetch.access import Access
from deploykey.manifests.requirements import GitRequirement, Requirements
from deploykey.secrets import githubapp, routing
from deploykey.secrets.config import Settings
from deploykey.secrets.credentials import Token
from deploykey.secrets.sshconfig import mismatch

SHA = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class Finding:
    where: str
    what: str
    via: str
    ok: bool
    detail: str
    fix: str = ""
    requirement: GitRequirement | None = None
    commit: str | None = None  # what the ref is now: the installer can fetch it once, then cache it
    transport: str = ""  # how it is fetched: "ssh", "HTTPS"


def pins(findings: Sequence[Finding]) -> list[str]:
    """`name @ URL@commit` for every checked requirement with a name and a commit, for uv's
    --override: a tag resolved here once is not resolved again (no fetch when cached)."""
    chosen: dict[str, set[str]] = {}
    for finding in findings:
        req = finding.requirement
        if finding.ok and req is not None and req.name and finding.commit:
            chosen.setdefault(req.name.lower(), set()).add(req.pinned(finding.commit))
    return sorted(next(iter(lines)) for lines in chosen.values() if len(lines) == 1)


def private_https(
    requirements: Requirements,
    routes: Sequence[routing.Route],
    tokens: Sequence[Token],
    app_host: str | None = None,
) -> list[GitRequirement]:
    """https requirements that need deploykey: a token or a GitHub App serves their host, or a key
    their repo."""
    token_hosts = {token.host for token in tokens} | ({app_host} if app_host else set())
    return [
        req
        for req in requirements.https
        if req.host_port in token_hosts
        or any(r.rank <= routing.GLOB_ROUTE and r.matches(req.host, req.repo) for r in routes)
    ]


def check(
    requirements: Requirements,
    access: Access,
    tokens: Sequence[Token],
    settings: Settings,
    fetcher: mirrors.Fetcher,
) -> list[Finding]:
    """Fetch every private requirement into its mirror (the check IS the fetch), then what the
    fetched commits name in turn (submodules, their manifests' private git dependencies), until
    nothing new turns up."""
    findings = [
        Finding(
            f"{problem.facts['file']}:{problem.facts['line']}",
            str(problem.facts["url"]),
            "-",
            False,
            problem.title,
            problem.fix,
        )
        for problem in requirements.problems
    ]
    app_host = access.app.app.host if access.app is not None else None
    pending = list(requirements.git) + private_https(requirements, access.routes, tokens, app_host)
    seen: set[tuple[str, str, str | None, str]] = set()
    from concurrent.futures import ThreadPoolExecutor  # here: ~3 ms of start-up (logging)

    # Several at once: each fetch that needs the network is a round trip.
    with ThreadPoolExecutor(max_workers=routing.CONNECTIONS) as pool:
        while pending:
            batch = []
            for req in pending:
                if (req.host_port, req.repo, req.ref, req.fragment) not in seen:
                    seen.add((req.host_port, req.repo, req.ref, req.fragment))
                    batch.append(req)
            if access.app is not None:  # tokens for the App's repositories the fetch will ask
                access.app.cover([req for req in batch if fetcher.needs_network(req)])
            found = list(
                pool.map(lambda req: _check(req, access, tokens, settings, fetcher), batch)
            )
            findings += found
            pending = [
                more
                for finding in found
                if finding.ok and finding.requirement is not None and finding.commit
                for more in _named_by(finding, fetcher, access, tokens)
            ]
    return findings


def _named_by(
    finding: Finding, fetcher: mirrors.Fetcher, access: Access, tokens: Sequence[Token]
) -> list[GitRequirement]:
    """The private repositories a fetched commit names: submodules, and the git dependencies in
    the manifests it holds (read as files, never run)."""
    assert finding.requirement is not None and finding.commit is not None
    found = discover.named_by(fetcher, finding.requirement, finding.commit)
    private = [req for req in found.git if req.scheme == "ssh"]
    app_host = access.app.app.host if access.app is not None else None
    return private + private_https(found, access.routes, tokens, app_host)


def _check(
    req: GitRequirement,
    access: Access,
    tokens: Sequence[Token],
    settings: Settings,
    fetcher: mirrors.Fetcher,
) -> Finding:
    if access.app is not None and access.app.app.serves(req):
        return replace(_check_app(req, access.app.app, fetcher), transport="HTTPS")
    if req.scheme == "ssh":
        return replace(_check_ssh(req, access, settings, fetcher), transport="ssh")
    rewritten = routing.lookup(access.routes, req.host, req.repo) is not None and not any(
        t.host == req.host_port for t in tokens
    )
    found = _check_https(req, access, tokens, fetcher)
    return replace(found, transport="ssh" if rewritten else "HTTPS")


def _check_app(req: GitRequirement, app: githubapp.App, fetcher: mirrors.Fetcher) -> Finding:
    """Over HTTPS with the installation token minted for it (Session.cover)."""
    via = f"GitHub App {app.app_id}'s installation token -> {app.git_url}"
    fetched = fetcher.fetch(req)
    if fetched.result.ok:
        return _check_ref(req, via, fetched, fetcher.git)
    if trust.git_refused(fetched.result.text):
        return _untrusted(req, via, app.git_url, fetched.result)
    return Finding(
        req.where,
        _what(req),
        via,
        False,
        _last_words(fetched.result),
        f"check that {req.repo} exists and that the App's installation can read it.",
    )


def _untrusted(req: GitRequirement, via: str, url: str, result: run.Result) -> Finding:
    """git refused the server's certificate: said as such, with the setting that adds a CA."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    error = trust.untrusted(host, "git", _last_words(result))
    return Finding(req.where, _what(req), via, False, f"{error.title}. {error.why}", error.fix)


def report(findings: Sequence[Finding]) -> None:
    """Print each finding; raise doctor::failed naming every requirement that would fail."""
    for finding in findings:
        verdict = "ok" if finding.ok else "FAILS"
        over = f"  (fetched over {finding.transport})" if finding.transport else ""
        output.detail(f"{finding.where}  {finding.what}{over}")
        output.detail(f"  via {finding.via}: {verdict}, {finding.detail}")
        if finding.fix and not finding.ok:
            output.detail(f"  fix: {finding.fix}")
    failed = [finding for finding in findings if not finding.ok]
    if failed:
        lines = [
            f"{f.where} {f.what}: {f.detail}" + (f" Fix: {f.fix}" if f.fix else "") for f in failed
        ]
        raise UserError(
            "doctor::failed", count=len(failed), total=len(findings), failures="\n".join(lines)
        )


def _set_key(name: str) -> str:
    """How to set the key `name` on the platform this command serves (errors.Platform)."""
    return errors.current().facts(name)["set_key"]


def _what(req: GitRequirement) -> str:
    return f"{req.host}/{req.repo}" + (f" @ {req.ref}" if req.ref else "") + req.fragment


def _check_ssh(
    req: GitRequirement, access: Access, settings: Settings, fetcher: mirrors.Fetcher
) -> Finding:
    host = settings.host(req.host)
    route = routing.lookup(access.routes, req.host, req.repo)
    if route is None and access.agent is None:
        return Finding(
            req.where,
            _what(req),
            f"{req.host} (no key)",
            False,
            f"no key is routed to {req.repo}: no DEPLOY_KEY, and no DEPLOY_KEY_<NAME> is mapped to it "
            "or opens it.",
            f"add a deploy key for {req.repo} as DEPLOY_KEY_<NAME> ({_set_key('DEPLOY_KEY_<NAME>')}; "
            "map it under `keys:` in deploykey.yml if its host does not name the repository in its "
            "greeting).",
        )
    # Which key: the routed one, or (Docker `--mount=type=ssh`) whatever the agent holds.
    key = f"the key {route.key.fingerprint}" if route else "the ssh agent's keys"
    name = route.key.name if route else "the agent's key"
    via = (
        f"{route.key.name} ({route.key.fingerprint})" if route else "the ssh agent"
    ) + f" -> {host.address}"
    fetched = fetcher.fetch(req)
    result = fetched.result
    if result.ok:
        return _check_ref(req, via, fetched, fetcher.git)
    text = result.text
    if "Host key verification failed" in text or "REVOKED HOST KEY" in text:
        if route is not None and access.greeter is not None:
            # One `ssh -v` to name the key the server showed: raises host::mismatch, which stops
            # the whole build (every requirement on that host would fail the same way).
            access.greeter.greet(route.key, req.host)
        error = mismatch(host, None)
        reason = error.title + ". " + error.why.split(". ")[0] + "."
        return Finding(req.where, _what(req), via, False, reason, error.fix)
    if "Permission denied" in text:
        return Finding(
            req.where,
            _what(req),
            via,
            False,
            f"{req.host} refused {key}: it is not registered as a deploy key anywhere there.",
            f"add the public half of {name} as a deploy key of {req.repo}.",
        )
    if "Repository not found" in text or "does not appear to be a git repository" in text:
        opens = access.opens(route.key, req.host) if route else None
        known = f" {req.host} says it opens {opens}." if opens else ""
        owner = f" ({route.key.name})" if route else ""
        return Finding(
            req.where,
            _what(req),
            via,
            False,
            f"{key}{owner} is valid, but for another repository: {req.host} answered "
            f"`Repository not found` for {req.repo}.{known}",
            f"register {name}'s public half as a deploy key of {req.repo}, or route {req.repo} to "
            "the key registered there (`keys:` in deploykey.yml).",
        )
    return Finding(
        req.where,
        _what(req),
        via,
        False,
        _last_words(result),
        f"check that {host.address} is reachable.",
    )


def _check_https(
    req: GitRequirement, access: Access, tokens: Sequence[Token], fetcher: mirrors.Fetcher
) -> Finding:
    token = next((t for t in tokens if t.host == req.host_port), None)
    route = routing.lookup(access.routes, req.host, req.repo)
    if token is None and route is not None:
        via = f"{route.key.name} ({route.key.fingerprint}), https rewritten to ssh"
    else:
        via = f"token {token.describe()}" if token else "no token"
    fetched = fetcher.fetch(req)
    result = fetched.result
    if result.ok:
        return _check_ref(req, via, fetched, fetcher.git)
    text = result.text
    if trust.git_refused(text):
        return _untrusted(req, via, f"https://{req.host_port}", result)
    if token is not None and (
        "Authentication failed" in text
        or "could not read Username" in text
        or " 401" in text
        or " 403" in text
    ):
        return Finding(
            req.where,
            _what(req),
            via,
            False,
            f"{req.host_port} refused the token {token.name}.",
            f"check that {token.name} is a valid token with read access to {req.repo}.",
        )
    return Finding(req.where, _what(req), via, False, _last_words(result), "")


def _check_ref(req: GitRequirement, via: str, fetched: mirrors.Fetched, git: str) -> Finding:
    """Is the requirement's ref in the mirror, and which commit is it."""
    refs = fetched.refs
    how = f"fetched{fetched.note}" if fetched.network else "in the mirror, no network"

    def found(detail: str, commit: str | None) -> Finding:
        if commit and not req.commit and not fetched.has_commit(git, commit):
            # A tag (or branch) may name a blob or a tree: the installer would fail on it later.
            kind = mirrors.object_type(git, fetched.path, commit)
            error = UserError(
                "requirements::not-a-commit",
                where=req.where,
                ref=req.ref or "HEAD",
                repo=f"{req.host}/{req.repo}",
                kind=kind,
                sha=commit,
            )
            return Finding(
                req.where, _what(req), via, False, error.title + ". " + error.why, error.fix
            )
        sub = discover.subdirectory(req)
        if sub and commit and mirrors.show(git, fetched.path, commit, sub + "/") is None:
            return Finding(
                req.where,
                _what(req),
                via,
                False,
                f"{detail}, but it has no directory `{sub}` (#subdirectory=).",
                f"name the directory that holds the package's pyproject.toml or setup.py in "
                f"{req.file}:{req.line}.",
            )
        return Finding(
            req.where, _what(req), via, True, f"{detail} ({how})", requirement=req, commit=commit
        )

    if req.commit:
        if fetched.has_commit(git, req.commit):
            return found(f"locked at {req.commit[:7]}", req.commit)
        return Finding(
            req.where,
            _what(req),
            via,
            False,
            f"the repository is readable, but has no commit {req.commit} (force-pushed away?).",
            f"lock again ({req.file} is out of date with the repository).",
        )
    if not req.ref:
        head = refs.get("HEAD")
        return found(f"readable, HEAD is {(head or '?')[:7]}", head)
    for name in (f"refs/tags/{req.ref}^{{}}", f"refs/tags/{req.ref}", f"refs/heads/{req.ref}"):
        if name in refs:
            return found(f"{req.ref} is {refs[name][:7]}", refs[name])
    if SHA.match(req.ref):
        full = [sha for sha in set(refs.values()) if sha.startswith(req.ref)]
        if len(req.ref) == 40 and fetched.has_commit(git, req.ref):
            return found(f"commit {req.ref[:7]} is there", req.ref)
        if len(full) == 1:
            return found(f"commit {req.ref[:7]} is a branch or tag head", full[0])
        return Finding(
            req.where,
            _what(req),
            via,
            False,
            f"the repository is readable, but commit {req.ref} is on none of its branches and "
            "tags (deploykey fetches branches and tags; an abbreviated commit must be a branch or "
            "tag head).",
            f"use the full 40-character commit, or a tag, in {req.file}:{req.line}.",
        )
    tags = sorted(
        n.removeprefix("refs/tags/")
        for n in refs
        if n.startswith("refs/tags/") and not n.endswith("^{}")
    )
    heads = sorted(n.removeprefix("refs/heads/") for n in refs if n.startswith("refs/heads/"))
    return Finding(
        req.where,
        _what(req),
        via,
        False,
        f"the repository is readable, but has no tag or branch `{req.ref}` (tags: {', '.join(tags[-5:]) or 'none'}; "
        f"branches: {', '.join(heads[:5]) or 'none'}).",
        f"use an existing tag, branch or commit in {req.file}:{req.line}.",
    )


def _last_words(result: run.Result) -> str:
    said = [
        line.strip()
        for line in result.lines
        if line.strip() and not line.startswith("fatal: Could not read")
    ]
    return " ".join(said[-3:]) or f"git exited with status {result.status}"
