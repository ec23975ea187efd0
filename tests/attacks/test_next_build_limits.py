"""The fetch's bounds and the bad input around it, end to end (issue 22): a host that never stops
talking is stopped at the deadline, one that sends too much at the limit, each with a clear error
and no key left; a read-only cache, a full disk, another build holding the run-time link."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, files_with_key, key_dirs, text_has_key
from support import hostile
from support.gitserver import GitServer
from support.hostile import assert_found_nothing
from support.slow_builds import SLOW, kill_leftovers, start_compile, wait_for

# The hostile dependency of test_hostile.py, as fixtures here.
hostile_repo = hostile.hostile_repo
hostile_build = hostile.hostile_build


def talking_host(build: Build, key: GeneratedKey, git_server: GitServer, repo: str) -> None:
    """An app whose one private repository is served by a host that never stops talking
    (gitserver.py: acme/endless-refs, one ref a second; acme/flood-refs, as fast as it goes)."""
    if not (git_server.root / "repos" / f"{repo}.git").exists():
        git_server.add_repo(repo, {"README": "never served\n"})
    git_server.grant(key.label, key.public, [repo])
    build.set_key(key.text)
    (build.app / "requirements.txt").write_text(
        f"talking @ git+ssh://git@github.com/{repo}.git@v1.0\n"
    )


def nothing_left(build: Build, key: GeneratedKey, result: subprocess.CompletedProcess[str]) -> None:
    """The build's key dir is gone and no process names it (git's ssh, the router); no key in
    the app, the cache or the output. (Its own key dir, by name: other builds may run at once.)"""
    [key_dir] = re.findall(r"removed the key dir (\S+)", result.stdout)
    assert not Path(key_dir).exists()
    left = subprocess.run(["pgrep", "-f", key_dir], capture_output=True, text=True).stdout
    assert left == ""
    assert files_with_key([build.app, build.cache], key.text) == []
    assert not text_has_key(result.stdout + result.stderr, key.text)


def test_a_host_that_never_stops_talking_is_stopped_at_the_deadline(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """An endless ref advertisement, one line a second: never silent, so ssh's ServerAlive never
    ends it. The whole fetch has a deadline (DEPLOYKEY_FETCH_TIMEOUT, set low here); past it git
    and ssh are stopped, the key removed, and the build fails naming what it was fetching. (The
    subprocess timeout only tells a hang from an answer: it hung before.)"""
    talking_host(build, utils_key, git_server, "acme/endless-refs")
    result = build.compile(env=build.environ(DEPLOYKEY_FETCH_TIMEOUT="5"), timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (
        " !     The fetch did not end within 5 s (DEPLOYKEY_FETCH_TIMEOUT): still fetching "
        "acme/endless-refs on github.com\n" in result.stderr
    )
    assert " !     Fix: If github.com is only slow, or the repositories large, raise " in out
    nothing_left(build, utils_key, result)


def test_a_host_that_sends_too_much_is_stopped_at_the_limit(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """A flood of refs, as fast as the host can send them: past what one host may send
    (DEPLOYKEY_FETCH_MAX_SIZE, set low here) the fetch is stopped, with the key removed."""
    talking_host(build, utils_key, git_server, "acme/flood-refs")
    env = build.environ(DEPLOYKEY_FETCH_MAX_SIZE="1M")
    result = build.compile(env=env, timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (
        " !     github.com sent more than 1.0 MiB (DEPLOYKEY_FETCH_MAX_SIZE) while deploykey "
        "fetched acme/flood-refs\n" in result.stderr
    )
    nothing_left(build, utils_key, result)


def test_a_fetch_timeout_that_is_not_a_number(build: Build, utils_key: GeneratedKey) -> None:
    build.set_key(utils_key.text)
    result = build.compile(env=build.environ(DEPLOYKEY_FETCH_TIMEOUT="10m"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(
        " !     DEPLOYKEY_FETCH_TIMEOUT=10m is not a valid setting\n !\n"
        " !     DEPLOYKEY_FETCH_TIMEOUT takes a whole number of seconds, e.g. 900.\n"
    )


@contextlib.contextmanager
def talking_http_host(pause: float) -> Iterator[int]:
    """A git HTTP host on 127.0.0.1 whose ref advertisement never ends (smart HTTP,
    gitprotocol-http): a ref every `pause` seconds, or as fast as it goes (0). Its port."""
    stopped = threading.Event()
    sha = "0" * 39 + "1"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            first = f"{sha} HEAD\0ofs-delta side-band-64k\n"
            body = b"001e# service=git-upload-pack\n0000" + b"%04x%s" % (
                len(first) + 4,
                first.encode(),
            )
            count = 0
            with contextlib.suppress(OSError):
                while not stopped.is_set():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
                    self.wfile.flush()
                    count += 1
                    body = b"0043%s refs/heads/b%09d\n" % (sha.encode(), count)
                    if pause:
                        time.sleep(pause)
                    else:
                        body *= 100

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("setting", "pause", "said"),
    [
        (
            "DEPLOYKEY_FETCH_TIMEOUT=5",
            0.5,
            "The fetch did not end within 5 s (DEPLOYKEY_FETCH_TIMEOUT): still fetching "
            "acme/talking on 127.0.0.1:{port}",
        ),
        (
            "DEPLOYKEY_FETCH_MAX_SIZE=1M",
            0,
            "127.0.0.1:{port} sent more than 1.0 MiB (DEPLOYKEY_FETCH_MAX_SIZE) while deploykey "
            "fetched acme/talking",
        ),
    ],
    ids=["deadline", "too-much"],
)
def test_an_https_host_that_never_stops_talking_is_stopped(
    build: Build, utils_key: GeneratedKey, setting: str, pause: float, said: str
) -> None:
    """The same over HTTPS (with a token, git-remote-https talks to the host): git's
    http.lowSpeedLimit ends only silence; the deadline and the limit end talk."""
    name, _, value = setting.partition("=")
    with talking_http_host(pause) as port:
        build.set_key("ghp_" + "a" * 36, "GIT_TOKEN_LOCAL")
        with (build.app / "deploykey.yml").open("a") as yml:
            yml.write(f"tokens:\n  GIT_TOKEN_LOCAL: {{host: '127.0.0.1:{port}'}}\n")
        url = f"git+http://127.0.0.1:{port}/acme/talking.git@v1.0"
        (build.app / "requirements.txt").write_text(f"talking @ {url}\n")
        result = build.compile(env=build.environ(**{name: value}), timeout=240)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f" !     {said.format(port=port)}\n" in result.stderr
    [key_dir] = re.findall(r"removed the key dir (\S+)", result.stdout)
    assert not Path(key_dir).exists()
    assert subprocess.run(["pgrep", "-f", key_dir], capture_output=True).stdout == b""


@contextlib.contextmanager
def mounted(target: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at `target` (the tests run as root, as CI does); unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_read_only_cache_dir_is_replaced_by_a_temporary_one(
    build: Build, utils_key: GeneratedKey
) -> None:
    """bin/compile with a CACHE_DIR on a read-only file system (a local run, another builder;
    Heroku's is always writable): a cache only saves time, so the build installs with the
    mirrors in a temporary dir, says that nothing is kept, and removes it. (It ended in exit 3,
    "This is a bug", after the fetch had opened the key dir.)"""
    build.set_key(utils_key.text)
    with mounted(build.cache, "ro,size=1m"):
        result = build.compile(timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert result.stderr.startswith(
        f" !     the build cache {build.cache} is on a read-only file system ({build.cache}): the "
        "mirrors and the installer's cache go to a temporary directory for this build, and "
        "nothing is kept for the next one (it fetches every private repository again)\n"
    )
    [temporary] = re.findall(r"removed the temporary cache (\S+)", result.stdout)
    assert not Path(temporary).exists()
    assert "Successfully installed private-utils-1.0" in out
    nothing_left(build, utils_key, result)


def test_a_read_only_cache_mount_for_deploykey_fetch(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """`deploykey fetch` leaves the mirrors for the `install --fetched` of a later RUN in the
    cache mount: a read-only one (`--mount=type=cache,readonly`) cannot be replaced, so it fails
    before any key is read, saying how to mount it."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    with mounted(tmp_path / "mount", "ro,size=1m") as cache:
        result = subprocess.run(
            [str(BIN / "deploykey"), "fetch", "--cache-dir", str(cache), "--env-dir", str(secrets)],
            cwd=build.app,
            env=build.environ(),
            capture_output=True,
            text=True,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == (
        f" !     The cache dir {cache} is on a read-only file system\n !\n"
        f" !     {cache} is mounted read-only. deploykey keeps there the mirrors of the private "
        "repositories, which a later step reads (`install --fetched`, the next CI job), and the "
        "installers' caches.\n !\n"
        f" !     Fix: Mount the cache read-write: `RUN --mount=type=cache,target={cache} ...` "
        "without `readonly`; a volume without `:ro`. Or point --cache-dir (DEPLOYKEY_CACHE_DIR) "
        "at a writable directory.\n"
        " !     (cache::read-only: README.md#cache-read-only)\n"
    )
    assert "key dir" not in result.stdout


def test_a_full_disk_during_the_mirror_write_says_disk(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """The build cache on a 1 MiB file system, a repository of about 3 MiB: git cannot write the
    mirror. The error says the disk is full, which directory, how much room there was; not to
    check that the host is reachable (what it said before)."""
    if not (git_server.root / "repos" / "acme" / "big.git").exists():
        git_server.add_repo("acme/big", {"data.txt": os.urandom(3 << 20).hex()[: 3 << 20]})
    git_server.grant(utils_key.label, utils_key.public, ["acme/big"])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "big @ git+ssh://git@github.com/acme/big.git@v1.0\n"
    )
    with mounted(build.cache, "size=1m"):
        result = build.compile(timeout=240)
        left = sorted(str(p) for p in build.cache.rglob("*"))
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    mirrors = build.cache / "deploykey" / "mirrors" / "github.com" / "acme"
    # How much is free depends on what else the build keeps in the cache (the kit's sealed
    # bytecode takes about 1 MiB when its dependencies are kept there).
    assert re.match(
        re.escape(
            f" !     No space left on the disk of {mirrors}\n !\n"
            " !     git could not write the mirror of github.com/acme/big: the file system holding "
            f"{mirrors} is full. It has "
        )
        + r"(0 bytes|\d+ bytes|[\d.]+ [KM]iB)"
        + re.escape(
            " free of 1.0 MiB once git removed what it had written of the mirror: less than the "
            "repository needs. deploykey keeps a mirror of each private repository there (the "
            "build cache), and fetched nothing more; the keys were removed.\n"
        ),
        result.stderr,
    ), result.stderr
    assert "is reachable" not in out
    assert not any(path.endswith(".partial") for path in left), left
    nothing_left(build, utils_key, result)


def test_a_second_build_while_another_holds_the_run_time_link(
    build: Build, utils_key: GeneratedKey
) -> None:
    """Build A installs (its slow package builds) through the link APP_PATH -> its build dir;
    build B on the same machine, with the same APP_PATH, fails before its fetch naming A (its
    pid and build dir), and says to wait or run builds one at a time. It failed after its fetch
    with "APP_PATH is a symbolic link ... Replace the link with a regular file or remove it"."""
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(SLOW)
    first = start_compile(build)
    (build.root / "next").mkdir()
    second = Build(build.root / "next", build.server, build.wheelhouse)
    second.set_key(utils_key.text)
    try:
        wait_for(build.home / "slow-started", first)
        result = second.compile(env=second.environ(DEPLOYKEY_APP_PATH=str(build.app_path)))
        assert build.app_path.readlink() == build.app
    finally:
        kill_leftovers(build)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == (
        f" !     {build.app_path} is in use by another build on this machine (pid {first.pid}, "
        f"build dir {build.app})\n !\n"
        f" !     While it installs, a build links the run-time path {build.app_path} to its build "
        "dir, so that the virtual environment it makes works at the path the app runs from; the "
        f"build of pid {first.pid} holds that link now, and two builds cannot both build at "
        f"{build.app_path}.\n !\n"
        " !     Fix: Wait for that build to end, then run this one again; or run builds on this "
        "machine one at a time (a CI concurrency limit of 1). For a local run, set "
        "DEPLOYKEY_APP_PATH to the build dir itself.\n"
        " !     (install::app-path-busy: README.md#install-app-path-busy)\n"
    )
    assert "Fetching" not in result.stdout


def test_a_scalingo_build_removes_the_key_from_its_env_dir(
    hostile_build: Build, utils_key: GeneratedKey
) -> None:
    """Scalingo runs bin/compile with ENV_DIR, a copy of the app's variables made for the build,
    and STACK=scalingo-22 (Dokku's herokuish sets STACK=heroku-24 itself): the key files are
    removed from it after the fetch, so a hostile dependency's build code, which finds ENV_DIR
    in the process table, reads no key there. (They stayed before: only heroku-* counted.)"""
    build, before = hostile_build, key_dirs()
    result = build.compile(env=build.environ(STACK="scalingo-22", DEPLOYKEY_INSTALL="venv"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"removed DEPLOY_KEY from {build.env_dir}" in result.stdout
    assert_found_nothing(build, utils_key, result.stdout + result.stderr, before)


def test_without_stack_the_env_dir_is_the_users_and_the_build_says_the_key_stays(
    build: Build, utils_key: GeneratedKey
) -> None:
    """bin/compile with no STACK: a developer's run on their own env dir, whose files deploykey
    never deletes. The build says where the key stays and who can read it."""
    build.set_key(utils_key.text)
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (build.env_dir / "DEPLOY_KEY").read_text() == utils_key.text
    assert result.stderr == (
        f" !     {build.env_dir} still holds DEPLOY_KEY, and the build code that runs after this "
        "can read it there: with no STACK of a builder that gives each build its own copy of the "
        "config vars (heroku-*: Heroku, Dokku; scalingo-*: Scalingo), the env dir is taken for "
        "your own, and deploykey deletes nothing of yours. Where it is a copy made for the "
        "build, set STACK, and deploykey removes the key files from it after the fetch.\n"
    )
