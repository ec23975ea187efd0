"""Mirrors and the git settings that hand them over, checked with the real git.

A mirror here is a bare repository made with git from a local one (the fetch over ssh is covered
end to end in test_heroku.py and test_hostile.py); what matters is what git does with the
settings deploykey writes: every URL form of a mirrored repository reaches its mirror, the clone
keeps the original URL, and anything else on a private host fails at once, named.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploykey import discover, mirrors, requirements
from deploykey.requirements import GitRequirement


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout


def requirement(url: str) -> GitRequirement:
    [req] = requirements.read_text("requirements.txt", f"x @ git+{url}").git
    return req


def mirrored(tmp_path: Path, url: str) -> tuple[mirrors.Mirrors, str]:
    """A mirror of a one-commit repository at the place the Fetcher would put it."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "README").write_text("private\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "README", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
    git("tag", "v1.0", cwd=work)
    req = requirement(url)
    root = tmp_path / "mirrors"
    path = mirrors.mirror_path(root, req)
    path.parent.mkdir(parents=True)
    git("clone", "-q", "--bare", str(work), str(path))
    commit = git("rev-parse", "HEAD", cwd=work).strip()
    return mirrors.Mirrors(root, ((req, path),), (("ssh", "github.com"),)), commit


def env_with(settings: dict[str, str], home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", **settings}


@pytest.mark.parametrize(
    "url",
    [
        "ssh://git@github.com/acme/private-utils.git",
        "ssh://git@github.com/acme/private-utils",
        "git@github.com:acme/private-utils.git",
        "https://github.com/acme/private-utils.git",
    ],
)
def test_every_form_of_the_url_reaches_the_mirror(tmp_path: Path, url: str) -> None:
    handed, commit = mirrored(tmp_path, "ssh://git@github.com/acme/private-utils.git@v1.0")
    home = tmp_path / "home"
    home.mkdir()
    # GIT_SSH_COMMAND as pip >= 25.1 sets it: it must not matter (no ssh runs).
    env = env_with({**handed.env(), "GIT_SSH_COMMAND": "false"}, home)
    git("clone", "-q", url, str(tmp_path / "clone"), env=env)
    assert git("rev-parse", "HEAD", cwd=tmp_path / "clone").strip() == commit
    # The clone's origin is the URL asked for, never the mirror's path.
    assert git("remote", "get-url", "origin", cwd=tmp_path / "clone").strip() == url


def test_gitconfig_and_environment_say_the_same(tmp_path: Path) -> None:
    handed, _commit = mirrored(tmp_path, "ssh://git@github.com/acme/private-utils.git@v1.0")
    home, empty = tmp_path / "home", tmp_path / "empty"
    home.mkdir()
    empty.mkdir()
    (home / ".gitconfig").write_text(handed.gitconfig())
    from_file = git("config", "--list", env=env_with({}, home), cwd=empty).splitlines()
    from_env = git("config", "--list", env=env_with(handed.env(), empty), cwd=empty)
    assert from_file == from_env.splitlines()
    assert len(from_file) == len(handed.settings())
    assert handed.env()["POETRY_SYSTEM_GIT_CLIENT"] == "true"


def test_a_repository_that_was_not_fetched_fails_at_once_named(tmp_path: Path) -> None:
    handed, _commit = mirrored(tmp_path, "ssh://git@github.com/acme/private-utils.git@v1.0")
    home = tmp_path / "home"
    home.mkdir()
    env = env_with(handed.env(), home)
    result = subprocess.run(
        ["git", "clone", "-q", "ssh://git@github.com/acme/secret-sauce.git", str(tmp_path / "c")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert mirrors.not_fetched(result.stderr, handed.root) == ["github.com/acme/secret-sauce"]
    # A public host is left alone: its URLs are not rewritten.
    listed = git("config", "--list", env=env, cwd=home)
    assert "gitlab.com" not in listed


def test_mirror_paths_stay_under_the_root(tmp_path: Path) -> None:
    req = requirement("ssh://git@github.com:2222/group/sub/repo.git@v1")
    assert mirrors.mirror_path(tmp_path, req) == tmp_path / "github.com_2222/group/sub/repo.git"
    hostile = GitRequirement("f", 1, "u", "github.com", 22, "git", "acme/../../etc", None)
    with pytest.raises(ValueError, match="unsafe repository path"):
        mirrors.mirror_path(tmp_path, hostile)


def test_relative_submodule_urls() -> None:
    base = "ssh://git@github.com/acme/app-core.git"
    assert mirrors.resolve_url(base, "../sub.git") == "ssh://git@github.com/acme/sub.git"
    assert mirrors.resolve_url(base, "./vendored") == "ssh://git@github.com/acme/app-core/vendored"
    assert mirrors.resolve_url(base, "git@github.com:x/y.git") == "git@github.com:x/y.git"


def test_the_subdirectory_of_a_requirement() -> None:
    req = requirement("ssh://git@github.com/acme/mono.git@v1#subdirectory=pkgs/a")
    assert discover.subdirectory(req) == "pkgs/a"
    assert discover.subdirectory(requirement("ssh://git@github.com/acme/x.git@v1")) == ""


def test_clones_that_fail_together_leave_no_directory(tmp_path: Path) -> None:
    """Clones of one owner fail at once (here ssh itself fails): once every fetch is over, none of
    the directories they made is left in the build cache, whichever failed last."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**env_with({}, home), "GIT_SSH_COMMAND": "false"}
    root = tmp_path / "cache" / "deploykey" / mirrors.DIR
    fetcher = mirrors.Fetcher("git", env, root)
    reqs = [requirement(f"ssh://git@github.com/acme/repo{n}.git@v1") for n in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(fetcher.fetch, reqs))
    assert not any(fetched.result.ok for fetched in results)
    fetcher.tidy()
    assert not (tmp_path / "cache").exists()
