"""Mirrors and the git settings that hand them over, checked with the real git.

A mirror here is a bare repository made with git from a local one (the fetch over ssh is covered
end to end in test_heroku.py and test_hostile.py); what matters is what git does with the
settings deploykey writes: every URL form of a mirrored repository reaches its mirror, the clone
keeps the original URL, and anything else on a private host fails at once, named.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploykey.fetch import discover, mirrors
from deploykey.manifests import requirements
from deploykey.manifests.requirements import GitRequirement


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


# ---------------------------------------------------------------- the seal


def sealed(tmp_path: Path) -> tuple[Path, mirrors.SealKey]:
    """A one-commit mirror, sealed."""
    handed, _commit = mirrored(tmp_path, "ssh://git@github.com/acme/private-utils.git@v1.0")
    [(_req, path)] = handed.repositories
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    assert key is not None
    mirrors.write_seal(path, key)
    return path, key


def test_the_seal_key_is_derived_from_the_builds_secrets_only() -> None:
    assert mirrors.SealKey.derive([]) is None  # an ssh agent only: nothing to seal with
    one = mirrors.SealKey.derive([b"key A", b"token"])
    assert one == mirrors.SealKey.derive([b"token", b"key A", b"key A"])  # a set, in no order
    other = mirrors.SealKey.derive([b"key B", b"token"])
    assert one is not None and other is not None
    assert one.mac != other.mac and one.ident != other.ident
    # Each use has its own label: the public ident tells nothing of the HMAC key.
    assert one.ident not in one.mac.hex()
    assert one.mac.hex() not in repr(one) and "key A" not in repr(one)
    # Length-prefixed: secrets cut differently are other secrets.
    assert mirrors.SealKey.derive([b"ab", b"c"]) != mirrors.SealKey.derive([b"a", b"bc"])


def test_the_seal_lives_beside_the_mirror_and_checks(tmp_path: Path) -> None:
    path, key = sealed(tmp_path)
    seal = mirrors.seal_path(path)
    assert seal.parent == path.parent and seal.name == path.name + ".seal"
    assert mirrors.check_seal(path, key) is None
    lines = seal.read_text().splitlines()
    assert lines[0] == mirrors.SEAL_FORMAT and lines[1] == f"key {key.ident}"
    assert list(path.parent.glob("*.git.seal.*")) == []  # the temp file was renamed
    rotated = mirrors.SealKey.derive([b"a rotated key"])
    assert rotated is not None
    assert mirrors.check_seal(path, rotated) == mirrors.OTHER_KEY


def _add_file(path: Path) -> None:
    (path / "commondir").write_text("/elsewhere\n")


def _same_size_edit(path: Path) -> None:
    [ref] = [p for p in (path / "packed-refs", path / "HEAD") if p.is_file()][:1]
    data = bytearray(ref.read_bytes())
    data[-2] = ord("0") if data[-2] != ord("0") else ord("1")
    ref.write_bytes(bytes(data))


def _chmod(path: Path) -> None:
    (path / "config").chmod(0o600)


def _remove(path: Path) -> None:
    (path / "description").unlink()


def _empty_dir(path: Path) -> None:
    (path / "worktrees").mkdir()


def _link(path: Path) -> None:
    (path / "info" / "exclude").unlink()
    (path / "info" / "exclude").symlink_to("/etc/hostname")


def _fifo(path: Path) -> None:
    os.mkfifo(path / "info" / "grafts")


def _mirror_is_a_link(path: Path) -> None:
    moved = path.with_name("elsewhere.git")
    path.rename(moved)
    path.symlink_to(moved)


@pytest.mark.parametrize(
    "change",
    [_add_file, _same_size_edit, _chmod, _remove, _empty_dir, _link, _fifo, _mirror_is_a_link],
)
def test_any_change_breaks_the_seal(tmp_path: Path, change: Callable[[Path], None]) -> None:
    path, key = sealed(tmp_path)
    change(path)
    assert mirrors.check_seal(path, key) == mirrors.CHANGED


def test_a_missing_odd_or_linked_seal_is_no_seal(tmp_path: Path) -> None:
    path, key = sealed(tmp_path)
    seal = mirrors.seal_path(path)
    text = seal.read_text()
    seal.unlink()
    assert mirrors.check_seal(path, key) == mirrors.NO_SEAL
    elsewhere = tmp_path / "planted-seal"
    elsewhere.write_text(text)
    seal.symlink_to(elsewhere)  # a seal is never read through a link
    assert mirrors.check_seal(path, key) == mirrors.NO_SEAL
    seal.unlink()
    seal.write_text(text + "x" * mirrors.SEAL_MAX)
    assert mirrors.check_seal(path, key) == mirrors.NO_SEAL
    seal.write_text(text.replace("hmac ", "hmac 0"))
    assert mirrors.check_seal(path, key) == mirrors.CHANGED


def test_writing_a_seal_never_follows_a_planted_link(tmp_path: Path) -> None:
    path, key = sealed(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("kept\n")
    seal = mirrors.seal_path(path)
    seal.unlink()
    seal.symlink_to(victim)
    mirrors.write_seal(path, key)
    assert victim.read_text() == "kept\n" and not seal.is_symlink()
    assert mirrors.check_seal(path, key) is None
    (path / "commondir").write_text("/elsewhere\n")
    mirrors.write_seal(path, None)  # no key: the old seal goes, the next build fetches again
    assert not seal.exists()


def local_fetcher(tmp_path: Path, seal: mirrors.SealKey | None) -> tuple[mirrors.Fetcher, Path]:
    """A Fetcher whose ssh URLs reach a local repository (an insteadOf in its environment), with
    real git: the seal's part of the fetch, without a server."""
    work = tmp_path / "upstream"
    work.mkdir(exist_ok=True)
    if not (work / ".git").exists():
        (work / "README").write_text("private\n")
        git("init", "-q", "-b", "main", cwd=work)
        git("add", "README", cwd=work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
        git("tag", "v1.0", cwd=work)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = env_with(mirrors.as_env([(f"url.{tmp_path}/.insteadOf", "ssh://git@github.com/")]), home)
    (tmp_path / "acme").mkdir(exist_ok=True)
    if not (tmp_path / "acme" / "private-utils.git").exists():
        (tmp_path / "acme" / "private-utils.git").symlink_to(work / ".git")
    return mirrors.Fetcher("git", env, tmp_path / "cache" / mirrors.DIR, seal), work


def test_the_fetch_seals_checks_and_discards(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-utils.git@v1.0")
    fetcher, _work = local_fetcher(tmp_path, key)
    first = fetcher.fetch(req)
    assert first.result.ok and first.network
    assert key is not None and mirrors.check_seal(first.path, key) is None
    warm, _work = local_fetcher(tmp_path, key)  # the next build, same key: no network
    assert not warm.needs_network(req)
    again = warm.fetch(req)
    assert again.result.ok and not again.network and warm.discarded == []
    (first.path / "info" / "grafts").write_text("")  # build code's
    tampered, _work = local_fetcher(tmp_path, key)
    assert tampered.needs_network(req)
    refetched = tampered.fetch(req)
    assert refetched.network and tampered.discarded == [(first.path, mirrors.CHANGED)]
    assert not (first.path / "info" / "grafts").exists()
    assert mirrors.check_seal(first.path, key) is None
    agent, _work = local_fetcher(tmp_path, None)  # no secret: never trusted, fetched again
    assert agent.needs_network(req)
    assert agent.fetch(req).network and agent.discarded == [(first.path, mirrors.AGENT_ONLY)]
    assert not mirrors.seal_path(first.path).exists()
    # What this build fetched itself is used for the rest of it: one fetch, not one per package.
    assert not agent.fetch(req).network and len(agent.discarded) == 1


def test_a_link_above_the_mirror_is_removed_not_followed(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-utils.git@v1.0")
    fetcher, _work = local_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    owner = path.parent
    elsewhere = tmp_path / "attacker-owner"
    owner.rename(elsewhere)
    owner.symlink_to(elsewhere)  # ROOT/github.com/acme -> a directory build code controls
    linked, _work = local_fetcher(tmp_path, key)
    assert linked.fetch(req).network
    assert not owner.is_symlink() and owner.is_dir()
    assert (elsewhere / "private-utils.git").is_dir()  # not followed into, not deleted there
    assert [why for _path, why in linked.discarded] == [f"{owner} is a link ({mirrors.CHANGED})"]


def test_prune_leaves_only_what_was_fetched_and_sealed_mirrors(tmp_path: Path) -> None:
    """What the installer's git would reach beside a fetched mirror (a shadowing `x` or `x/.git`,
    a prefix sibling `x-extra`) goes unless it is a mirror whose seal checks; ROOT/not-fetched
    goes."""
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-utils.git@v1.0")
    fetcher, _work = local_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    kept = path.with_name("private-utils-kept.git")  # another repository's mirror, sealed
    shutil.copytree(path, kept)
    mirrors.write_seal(kept, key)
    planted = [path.with_name("private-utils"), path.with_name("private-utils-extra.git")]
    for place in planted:
        shutil.copytree(path, place)
    (fetcher.root / mirrors.NOT_FETCHED / "github.com").mkdir(parents=True)
    fetcher.prune()
    assert [p for p in planted if p.exists()] == [] and kept.is_dir() and path.is_dir()
    assert not (fetcher.root / mirrors.NOT_FETCHED).exists()
    assert sorted(str(p.name) for p, _why in fetcher.removed) == [
        "not-fetched",
        "private-utils",
        "private-utils-extra.git",
    ]


def partial_fetcher(tmp_path: Path, seal: mirrors.SealKey | None) -> tuple[mirrors.Fetcher, Path]:
    """A Fetcher for pip (partial mirrors) whose ssh URLs reach a bare repository over file://
    (a local path would be cloned by hardlinks, never filtered), served as GitHub serves it; its
    history: three releases that each replace a 64 KiB random file, the file gone at v3.0."""
    upstream = tmp_path / "upstream.git"
    if not upstream.exists():
        work = tmp_path / "work"
        work.mkdir()
        git("init", "-q", "-b", "main", cwd=work)
        for n in (1, 2, 3):
            big = work / "big.bin"
            if n < 3:
                big.write_bytes(os.urandom(64 * 1024))
            else:
                big.unlink()
            (work / "README").write_text(f"release {n}\n")
            git("add", "-A", cwd=work)
            git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", f"r{n}", cwd=work)
            git("tag", f"v{n}.0", cwd=work)
        git("clone", "-q", "--bare", str(work), str(upstream))
        git("--git-dir", str(upstream), "config", "uploadpack.allowFilter", "true")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    rule = (f"url.file://{tmp_path}/.insteadOf", "ssh://git@github.com/acme/private-")
    env = env_with(mirrors.as_env([rule]), home)
    root = tmp_path / "cache" / mirrors.DIR
    return mirrors.Fetcher("git", env, root, seal, partial=True), upstream


def objects(path: Path) -> set[str]:
    listed = git("--git-dir", str(path), "cat-file", "--batch-all-objects", "--batch-check")
    return {line.split()[0] for line in listed.splitlines()}


def test_a_partial_mirror_holds_what_pip_checks_out_and_no_other_file(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    fetcher, upstream = partial_fetcher(tmp_path, key)
    first = fetcher.fetch(req)
    assert first.result.ok and first.network and first.note == ""
    assert mirrors.is_partial(first.path) and mirrors.check_seal(first.path, key) is None
    blob = {
        n: git("--git-dir", str(upstream), "rev-parse", f"v{n}.0:big.bin").strip() for n in (1, 2)
    }
    held = objects(first.path)
    assert blob[1] in held and blob[2] not in held  # v1.0's file, not v2.0's
    assert len(held) < len(objects(upstream))
    # The next build: sealed, filled, no network; a new tag costs its own commit.
    warm, _ = partial_fetcher(tmp_path, key)
    assert not warm.needs_network(req) and not warm.fetch(req).network
    newer = requirement("ssh://git@github.com/acme/private-upstream.git@v2.0")
    assert warm.needs_network(newer)  # its tag is there, its file is not
    assert warm.fetch(newer).network and blob[2] in objects(first.path)
    # pip's clone of the mirror, with the installer's settings and no network protocol at all.
    fetched = mirrors.Mirrors(warm.root, ((newer, first.path),), (("ssh", "github.com"),))
    clone_env = {**env_with(fetched.env(), tmp_path / "home"), "GIT_ALLOW_PROTOCOL": "file"}
    url = "ssh://git@github.com/acme/private-upstream.git"
    git("clone", "-q", "--filter=blob:none", url, str(tmp_path / "pip"), env=clone_env)
    git("checkout", "-q", "v2.0", cwd=tmp_path / "pip", env=clone_env)
    assert git("hash-object", str(tmp_path / "pip" / "big.bin")).strip() == blob[2]


def test_uvs_fetch_of_a_partial_mirror_asks_for_what_pip_does_with_no_network(
    tmp_path: Path,
) -> None:
    """uv 0.13's git calls (crates/uv-git/src/git.rs: `git init`, `rev-parse <commit>^0`, `fetch
    --force --update-head-ok <url> +<commit>:refs/commit/<commit>`, `clone --local`, `reset
    --hard`), with the installer's settings, the upstream gone and no network protocol: they
    work, uv's database holds the history's commits and trees but no file it did not check out,
    and its checkout is v2.0's (v1.0's file, in v2.0's history, is not in the mirror). Without the promisor settings the mirror's upload-pack needs
    every file of the history and fails."""
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v2.0")
    fetcher, upstream = partial_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    commit = git("--git-dir", str(upstream), "rev-parse", "v2.0^{commit}").strip()
    blob = {
        n: git("--git-dir", str(upstream), "rev-parse", f"v{n}.0:big.bin").strip() for n in (1, 2)
    }
    upstream.rename(tmp_path / "gone.git")
    handed = mirrors.Mirrors(fetcher.root, ((req, path),), (("ssh", "github.com"),))
    url = "ssh://git@github.com/acme/private-upstream.git"
    db, checkout = tmp_path / "uv" / "db", tmp_path / "uv" / "checkout"
    db.mkdir(parents=True)

    def uv_calls(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        git("init", "-q", cwd=db, env=env)
        subprocess.run(["git", "rev-parse", f"{commit}^0"], cwd=db, env=env, capture_output=True)
        refspec = f"+{commit}:refs/commit/{commit}"
        return subprocess.run(
            ["git", "fetch", "--force", "--update-head-ok", url, refspec],
            cwd=db,
            env=env,
            capture_output=True,
            text=True,
        )

    without = {
        **env_with(
            mirrors.as_env(handed.settings()[: -len(handed.promisors())]), tmp_path / "home"
        ),
        "GIT_ALLOW_PROTOCOL": "file",
    }
    failed = uv_calls(without)
    assert failed.returncode != 0 and "lazy fetching disabled" in failed.stderr, failed.stderr
    shutil.rmtree(db)
    db.mkdir()
    env = {**env_with(handed.env(), tmp_path / "home"), "GIT_ALLOW_PROTOCOL": "file"}
    fetched = uv_calls(env)
    assert fetched.returncode == 0, fetched.stderr
    held = objects(db / ".git")
    assert commit in held and blob[1] not in held and blob[2] not in held
    git("clone", "-q", "--local", str(db), str(checkout), env=env)
    git("reset", "-q", "--hard", commit, cwd=checkout, env=env)
    assert git("hash-object", str(checkout / "big.bin")).strip() == blob[2]
    assert blob[1] not in objects(checkout / ".git")


def test_the_promisor_settings_name_each_url_uv_may_fetch(tmp_path: Path) -> None:
    handed, _commit = mirrored(tmp_path, "ssh://git@github.com/acme/private-utils.git@v1.0")
    names = {
        key.removesuffix(".promisor") for key, _ in handed.promisors() if key.endswith(".promisor")
    }
    assert names == {
        f"remote.{url}{suffix}"
        for url in (
            "ssh://git@github.com/acme/private-utils",
            "https://github.com/acme/private-utils",
        )
        for suffix in ("", ".git")
    }
    assert (
        "remote.https://github.com/acme/private-utils.partialCloneFilter",
        "blob:none",
    ) in handed.promisors()
    # The URL as written first: a lazy fetch asks each promisor remote in turn.
    assert handed.promisors()[0] == (
        "remote.ssh://git@github.com/acme/private-utils.git.promisor",
        "true",
    )


def test_a_full_mirror_is_fetched_for_poetry_and_a_partial_one_is_replaced(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    fetcher, upstream = partial_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    full = mirrors.Fetcher(fetcher.git, fetcher.env, fetcher.root, key)  # Poetry: partial=False
    assert full.needs_network(req) and full.fetch(req).network
    assert full.discarded == [(path, mirrors.PARTIAL_NOT_ENOUGH)]
    assert not mirrors.is_partial(path) and objects(path) == objects(upstream)


def test_a_host_that_refuses_filters_gets_the_full_fetch_and_says_so(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    fetcher, upstream = partial_fetcher(tmp_path, key)
    git("--git-dir", str(upstream), "config", "uploadpack.allowFilter", "false")
    fetched = fetcher.fetch(req)
    assert fetched.result.ok and "in full" in fetched.note and "allowFilter" in fetched.note
    assert objects(fetched.path) == objects(upstream)
    assert mirrors.check_seal(fetched.path, key) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda path: (path / "shallow").write_text(
            git("--git-dir", str(path), "rev-parse", "v1.0").strip() + "\n"
        ),
        lambda path: next((path / "objects" / "pack").glob("*.promisor")).unlink(),
        lambda path: (path / "config").write_text(
            (path / "config").read_text().replace("blob:none", "blob:limit=1")
        ),
    ],
    ids=["planted-shallow", "promisor-removed", "filter-changed"],
)
def test_a_changed_partial_mirror_is_discarded_and_fetched_again(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    """Build code of build N edits the cached partial mirror (a `shallow` file that hides
    history, a pack's promisor mark, its filter): build N+1 discards it and fetches again."""
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    fetcher, _ = partial_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    change(path)
    rotated = mirrors.SealKey.derive([b"deploy key bytes", b"a second key"])
    for seal, why in ((key, mirrors.CHANGED), (rotated, mirrors.OTHER_KEY)):
        after, _ = partial_fetcher(tmp_path, seal)
        assert after.needs_network(req)
        assert after.fetch(req).network and after.discarded == [(path, why)]
        assert not (path / "shallow").exists() and mirrors.check_seal(path, seal) is None
        change(path)


def shallow_fetcher(tmp_path: Path, seal: mirrors.SealKey | None) -> tuple[mirrors.Fetcher, Path]:
    """A Fetcher for Poetry (shallow mirrors), over partial_fetcher's upstream."""
    fetcher, upstream = partial_fetcher(tmp_path, seal)
    return mirrors.Fetcher("git", fetcher.env, fetcher.root, seal, shallow=True), upstream


def poetry_clone(tmp_path: Path, handed: mirrors.Mirrors, commit: str, dest: str) -> Path:
    """Poetry 2.5's system git client, with the installer's settings and no network protocol:
    `git clone --recurse-submodules -- <url> <dest>`, then `git checkout <commit>`
    (poetry/vcs/git/system.py, SystemGit.clone and checkout)."""
    env = {**env_with(handed.env(), tmp_path / "home"), "GIT_ALLOW_PROTOCOL": "file"}
    url = "ssh://git@github.com/acme/private-upstream.git"
    target = tmp_path / dest
    git("clone", "--recurse-submodules", "--", url, str(target), env=env)
    git("--git-dir", str(target / ".git"), "--work-tree", str(target), "checkout", commit, env=env)
    return target


def test_a_shallow_mirror_holds_the_commits_asked_for_and_serves_poetrys_clone(
    tmp_path: Path,
) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    fetcher, upstream = shallow_fetcher(tmp_path, key)
    sha = {
        n: git("--git-dir", str(upstream), "rev-parse", f"v{n}.0^{{commit}}").strip()
        for n in (1, 2)
    }
    blob = {
        n: git("--git-dir", str(upstream), "rev-parse", f"v{n}.0:big.bin").strip() for n in (1, 2)
    }
    tagged = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    first = fetcher.fetch(tagged)
    assert first.result.ok and first.network, first.result.text
    path = first.path
    assert mirrors.is_shallow(path) and not mirrors.is_partial(path)
    assert mirrors.check_seal(path, key) is None
    held = objects(path)
    assert blob[1] in held and blob[2] not in held and sha[2] not in held
    # A lockfile's commit (v2.0's, behind the default branch): its own tree, kept under a tag
    # Poetry's clone copies; then the next build needs no network for either.
    pinned = requirement(f"ssh://git@github.com/acme/private-upstream.git@{sha[2]}")
    assert fetcher.fetch(pinned).network
    assert blob[2] in objects(path)
    assert (
        git("--git-dir", str(path), "rev-parse", f"refs/tags/deploykey/{sha[2]}").strip() == sha[2]
    )
    warm, _ = shallow_fetcher(tmp_path, key)
    for req in (tagged, pinned):
        assert not warm.needs_network(req) and not warm.fetch(req).network
    assert warm.discarded == []
    # Poetry's own git calls, the upstream gone: both commits check out, shallow.
    upstream.rename(tmp_path / "gone.git")
    handed = mirrors.Mirrors(warm.root, ((pinned, path),), (("ssh", "github.com"),))
    for n, dest in ((1, "src-v1"), (2, "src-v2")):
        checkout = poetry_clone(tmp_path, handed, sha[n], dest)
        assert git("hash-object", str(checkout / "big.bin")).strip() == blob[n]
        assert (checkout / ".git" / "shallow").is_file()
    (tmp_path / "gone.git").rename(upstream)
    # A new commit later: its own delta, into the same shallow mirror.
    work = tmp_path / "work"
    (work / "README").write_text("release 4\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "r4", cwd=work)
    git("push", "-q", str(upstream), "HEAD:main", cwd=work)
    newest = git("rev-parse", "HEAD", cwd=work).strip()
    later = requirement(f"ssh://git@github.com/acme/private-upstream.git@{newest}")
    again, _ = shallow_fetcher(tmp_path, key)
    assert again.needs_network(later) and again.fetch(later).network
    assert again.discarded == [] and newest in objects(path) and blob[1] in objects(path)
    # A branch by name (asked again every build): kept under its own name, from FETCH_HEAD.
    branch = requirement("ssh://git@github.com/acme/private-upstream.git@main")
    assert again.needs_network(branch) and again.fetch(branch).result.ok
    assert git("--git-dir", str(path), "rev-parse", "refs/heads/main").strip() == newest
    assert mirrors.check_seal(path, key) is None


def test_a_shallow_mirror_is_replaced_for_pip_and_a_partial_one_for_poetry(tmp_path: Path) -> None:
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    poetry, _ = shallow_fetcher(tmp_path, key)
    path = poetry.fetch(req).path
    pip, _ = partial_fetcher(tmp_path, key)
    assert pip.needs_network(req) and pip.fetch(req).network
    assert pip.discarded == [(path, mirrors.SHALLOW_NOT_ENOUGH)] and mirrors.is_partial(path)
    poetry, _ = shallow_fetcher(tmp_path, key)
    assert poetry.fetch(req).network and poetry.discarded == [(path, mirrors.PARTIAL_NOT_ENOUGH)]
    assert mirrors.is_shallow(path)


def _swap_for_full(path: Path) -> None:
    """Build code replaces the shallow mirror with a full one whose v1.0 is its own commit."""
    upstream = path.parents[4] / "upstream.git"
    work = path.parent / "attacker-work"
    git("clone", "-q", str(upstream), str(work))
    git("checkout", "-q", "v1.0", cwd=work)
    (work / "README").write_text("attacker\n")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "evil", cwd=work)
    git("tag", "-f", "v1.0", cwd=work)
    shutil.rmtree(path)
    git("clone", "-q", "--bare", str(work), str(path))
    shutil.rmtree(work)
    config = (
        (path / "config")
        .read_text()
        .replace(str(work), "ssh://git@github.com/acme/private-upstream.git")
    )
    (path / "config").write_text(config)
    for refspec in mirrors.REFSPECS:
        git("--git-dir", str(path), "config", "--add", mirrors.FETCH_KEY, refspec)


def _plant_shallow(path: Path) -> None:
    """A `shallow` line naming another commit: git would not look behind it."""
    head = git("--git-dir", str(path), "rev-parse", "HEAD").strip()
    (path / "shallow").write_text(head + "\n")


def _tamper_config(path: Path) -> None:
    git("--git-dir", str(path), "config", "uploadpack.packObjectsHook", "touch /tmp/owned")


@pytest.mark.parametrize(
    "change", [_swap_for_full, _plant_shallow, _tamper_config], ids=["swap", "shallow", "config"]
)
def test_a_changed_shallow_mirror_is_discarded_and_fetched_again(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    """Build code of build N edits the cached shallow mirror: build N+1 discards it, fetches
    again, and holds the host's v1.0."""
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    req = requirement("ssh://git@github.com/acme/private-upstream.git@v1.0")
    fetcher, upstream = shallow_fetcher(tmp_path, key)
    path = fetcher.fetch(req).path
    host = git("--git-dir", str(upstream), "rev-parse", "v1.0^{commit}").strip()
    before = (path / "shallow").read_text()
    change(path)
    after, _ = shallow_fetcher(tmp_path, key)
    assert after.needs_network(req)
    assert after.fetch(req).network
    assert [why for _path, why in after.discarded] in (
        [mirrors.CHANGED],
        ["its settings are not those deploykey writes for this repository"],
    )
    assert git("--git-dir", str(path), "rev-parse", "v1.0^{commit}").strip() == host
    assert (path / "shallow").read_text() == before
    assert mirrors.check_seal(path, key) is None


def test_a_short_commit_id_gets_a_full_mirror_and_says_so(tmp_path: Path) -> None:
    """A host serves a commit by its full id only: a short one is fetched in full, as before."""
    key = mirrors.SealKey.derive([b"deploy key bytes"])
    fetcher, upstream = shallow_fetcher(tmp_path, key)
    short = git("--git-dir", str(upstream), "rev-parse", "--short", "v2.0^{commit}").strip()
    fetched = fetcher.fetch(requirement(f"ssh://git@github.com/acme/private-upstream.git@{short}"))
    assert fetched.result.ok and f"{short} could not be fetched by itself" in fetched.note
    assert not mirrors.is_shallow(fetched.path) and objects(fetched.path) == objects(upstream)
    assert mirrors.check_seal(fetched.path, key) is None


def test_commits_peels_each_name_as_rev_parse_does(tmp_path: Path) -> None:
    """`_commits` (one cat-file --batch-check) gives, name by name, what one `rev-parse --verify
    NAME^{commit}` each gave: commits, short ids, annotated and lightweight tags, branches, HEAD,
    a tag and a branch of one name, what is no commit (a tree, a blob), what is not there, and
    names that look like options."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    git("config", "user.email", "t@example.com", cwd=work)
    git("config", "user.name", "t", cwd=work)
    (work / "README").write_text("one\n")
    git("add", "README", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work).strip()
    (work / "README").write_text("two\n")
    git("commit", "-q", "-am", "two", cwd=work)
    git("tag", "light", first, cwd=work)
    git("tag", "-a", "-m", "v", "v1.0", cwd=work)
    git("branch", "both", first, cwd=work)
    git("tag", "both", cwd=work)
    blob = git("rev-parse", "HEAD:README", cwd=work).strip()
    tree = git("rev-parse", "HEAD^{tree}", cwd=work).strip()
    annotated = git("rev-parse", "v1.0", cwd=work).strip()
    mirror = tmp_path / "m.git"
    git("clone", "-q", "--bare", str(work), str(mirror))
    names = [
        first, first[:12], annotated, "v1.0", "refs/tags/v1.0", "light", "refs/tags/light",
        "main", "refs/heads/main", "HEAD", "both", "refs/heads/both", "refs/tags/both", blob,
        tree, "0" * 40, "nothere", "refs/tags/nothere", "-q", "--all", "main~1", "v1.0^{}",
        "with space", "",
    ]  # fmt: skip
    expected = [mirrors._commit("git", mirror, name) for name in names]
    assert mirrors._commits("git", mirror, names) == expected
    assert expected[0] == expected[1] == expected[5] == first and expected[4] != annotated
    assert expected[13] is None and expected[14] is None and expected[15] is None
