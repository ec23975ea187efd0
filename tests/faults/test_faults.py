"""Faults and hostile input, end to end: each ends in a clear error or a correct build, with nothing
half-written and nothing leaked. (Malformed keys: test_keys.py; a failing pip, SIGTERM and SIGINT:
test_heroku.py; a setup.py reading its environment and argv: test_heroku.py and test_cnb.py.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    BIN,
    KIT,
    REQUIREMENT,
    Build,
    GeneratedKey,
    files_with_key,
    key_dirs,
    key_fragments,
    make_key,
    silent_server,
    snapshot,
    text_has_key,
)
from support.gitserver import GitServer
from support.slow_builds import SLOW, kill_leftovers, start_compile, start_slow_fetch, wait_for


def clean(
    build: Build, key: GeneratedKey, result: subprocess.CompletedProcess[str], before: set[str]
) -> None:
    assert files_with_key([build.app, build.cache], key.text) == []
    assert not text_has_key(result.stdout + result.stderr, key.text)
    assert key_dirs() - before == set()


# ---------------------------------------------------------------- scrub guarantees


def test_after_sigkill_the_next_build_removes_the_key(
    build: Build, utils_key: GeneratedKey, git_server: GitServer
) -> None:
    """SIGKILL while the fetch has the key (no handler runs): the next build sweeps the key dir."""
    before = key_dirs()
    process = start_slow_fetch(build, utils_key, git_server)
    try:
        left = key_dirs() - before
        assert len(left) == 1
        process.kill()  # SIGKILL: no handler runs, the key dir stays behind
        process.wait(timeout=30)
    finally:
        kill_leftovers(build)
        for directory in key_dirs() - before:  # git's ssh child, still waiting for the server
            subprocess.run(["pkill", "-KILL", "-f", directory], check=False)
    assert key_dirs() - before == left
    (build.app / "requirements.txt").write_text(REQUIREMENT + "\n")
    result = build.compile("--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    [stale] = left
    assert (
        f"removed {stale}, left by a build that ended without cleaning up (pid {process.pid}, killed?)"
        in result.stdout
    )
    assert key_dirs() - before == set()


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_a_signal_during_the_fetch_removes_the_key_and_stops_git(
    build: Build, utils_key: GeneratedKey, git_server: GitServer, signum: signal.Signals
) -> None:
    """SIGTERM, SIGINT or SIGHUP while git fetches with the key (the server holds the connection
    open): the key dir is removed, git and its ssh (their process group) are stopped, and the
    build says it was interrupted. (During the install the keys are gone already:
    test_heroku.py::test_signal_during_install_scrubs.)"""
    before = key_dirs()
    process = start_slow_fetch(build, utils_key, git_server)
    try:
        [key_dir] = key_dirs() - before
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
        # Whatever still runs with the key dir in its command line: git's ssh, the router.
        left = subprocess.run(["pgrep", "-f", key_dir], capture_output=True, text=True).stdout
    finally:
        kill_leftovers(build)
    assert process.returncode == 128 + signum, stdout + stderr
    assert f" !     The build was interrupted by {signum.name}" in stderr
    assert f"removed the key dir {key_dir}" in stdout
    assert left == ""
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    clean(build, utils_key, result, before)


def test_sigkill_during_the_install_leaves_no_key(build: Build, utils_key: GeneratedKey) -> None:
    """The keys are gone before the installer starts: killing the build there leaves none."""
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(SLOW)
    process = start_compile(build)
    try:
        wait_for(build.home / "slow-started", process)
        assert key_dirs() - before == set()
        process.kill()
        process.wait(timeout=30)
    finally:
        kill_leftovers(build)
    assert key_dirs() - before == set()
    assert files_with_key([build.app, build.cache, build.home], utils_key.text) == []


def test_after_sigkill_the_next_build_removes_the_run_time_link(
    build: Build, utils_key: GeneratedKey
) -> None:
    """SIGKILL while the venv is built through the link APP_PATH -> BUILD_DIR (the run-time path
    did not exist): the link stays behind. The next build, from another build dir as on Heroku,
    knows the link for its own (it marked it), removes it and builds; before, every later build
    failed path::symlink. While the first build runs, its link is not touched. A link the user
    made stays an error (test_planted_app_path_link_is_refused). (Without /proc:
    test_install.py::test_a_link_a_killed_build_left_is_removed_and_a_running_builds_stays.)"""
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(SLOW)
    process = start_compile(build)
    (build.root / "next").mkdir()
    following = Build(build.root / "next", build.server, build.wheelhouse)
    following.set_key(utils_key.text)
    env = following.environ(DEPLOYKEY_APP_PATH=str(build.app_path))
    try:
        wait_for(build.home / "slow-started", process)
        assert build.app_path.is_symlink()
        meanwhile = following.compile(env=env)  # the first build still runs: its link stays
        assert meanwhile.returncode == 1, meanwhile.stdout + meanwhile.stderr
        assert f"{build.app_path} is in use by another build on this machine" in meanwhile.stderr
        assert "removed the link" not in meanwhile.stdout
        assert build.app_path.readlink() == build.app
        process.kill()
        process.wait(timeout=30)
    finally:
        kill_leftovers(build)
    assert build.app_path.is_symlink()  # left behind
    shutil.rmtree(build.app)  # that build dir is gone; the next build has its own
    before = key_dirs()
    result = following.compile(env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        f"       removed the link {build.app_path} -> {build.app}, left by a build that ended "
        f"without cleaning up (pid {process.pid}, killed?)"
    ) in result.stdout
    assert "Successfully installed private-utils-1.0" in out
    assert list(build.app_path.parent.iterdir()) == []
    clean(following, utils_key, result, before)


def test_two_builds_at_once_keep_to_their_own_keys(
    build: Build, git_server: GitServer, keys_dir: Path, tmp_path: Path
) -> None:
    """Build A is in the middle of its install when build B starts (and sweeps): B must not touch
    A's key dir, and each build fetches with its own key only."""
    from conftest import Build as Layout

    before = key_dirs()
    key_a = make_key(keys_dir)
    git_server.grant(key_a.label, key_a.public, ["acme/slow-lib", "acme/private-utils"])
    key_b = make_key(keys_dir)
    git_server.grant(key_b.label, key_b.public, ["acme/billing"])
    build.set_key(key_a.text)
    (build.app / "requirements.txt").write_text(REQUIREMENT + "\n")
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = Layout(other_root, git_server, build.wheelhouse)
    other.set_key(key_b.text)
    (other.app / "requirements.txt").write_text(
        "billing @ git+ssh://git@github.com/acme/billing.git@v1.0\n"
    )
    first = start_compile(build)
    deadline = time.monotonic() + 60
    while not key_dirs() - before:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.02)
    a_dir = key_dirs() - before
    second = other.compile()
    out_a, err_a = first.communicate(timeout=300)
    assert first.returncode == 0, out_a + err_a
    assert second.returncode == 0, second.stdout + second.stderr
    assert not any(f"removed {d}" in second.stdout for d in a_dir)
    fetched = {line for line in git_server.log() if line.endswith(" granted")}
    assert f"{key_a.label} acme/private-utils granted" in fetched
    assert f"{key_b.label} acme/billing granted" in fetched
    assert not any(line.startswith(key_b.label) and "private-utils" in line for line in fetched)
    assert not any(line.startswith(key_a.label) and "billing" in line for line in fetched)
    assert key_dirs() - before == set()
    for layout, key in ((build, key_a), (other, key_b)):
        assert files_with_key([layout.app, layout.cache], key.text) == []


# In a mount namespace of its own (unshare: its mounts are private), /dev/shm is a 64 KiB tmpfs,
# filled, or mounted read-only: the machine's /dev/shm is never touched.
DEV_SHM = {
    "full": "mount -t tmpfs -o size=64k deploykey-test /dev/shm && "
    "(cat /dev/zero > /dev/shm/fill 2>/dev/null || true)",
    "read-only": "mount -t tmpfs -o ro,size=64k deploykey-test /dev/shm",
}


@pytest.mark.parametrize(
    ("shm", "reason"), [("full", "No space left on device"), ("read-only", "Read-only file system")]
)
def test_a_dev_shm_that_cannot_hold_the_key_falls_back_to_tmpdir(
    build: Build, utils_key: GeneratedKey, shm: str, reason: str
) -> None:
    """/dev/shm full (Docker's is 64 MB, shared with whatever the build runs) or read-only: it was
    exit 3, 'a bug'. The key dir is made in $TMPDIR instead, as the README says, and the build
    says so; nothing is left there."""
    before = key_dirs()
    tmpdir = build.root / "tmp"
    tmpdir.mkdir()
    build.set_key(utils_key.text)
    argv = [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir)]
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", DEV_SHM[shm] + ' && exec "$@"', "sh", *argv],
        env=build.environ(TMPDIR=str(tmpdir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert (
        f"       /dev/shm cannot hold the key ({reason}): the key dir is "
        + str(tmpdir / "deploykey-")
        in out
    )
    assert "Successfully installed private-utils-1.0" in out
    assert list(tmpdir.glob("deploykey-*")) == []
    clean(build, utils_key, result, before)


@pytest.mark.parametrize(
    ("shm", "reason"), [("full", "No space left on device"), ("read-only", "Read-only file system")]
)
def test_a_dry_run_plans_the_key_dir_where_the_build_would_make_it(
    build: Build, utils_key: GeneratedKey, shm: str, reason: str
) -> None:
    """The plan of a dry run names the place a real build would use, decided by the same code:
    with /dev/shm full it named /dev/shm, where no key dir can be made."""
    before = key_dirs()
    tmpdir = build.root / "tmp"
    tmpdir.mkdir()
    build.set_key(utils_key.text)
    argv = [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir)]
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", DEV_SHM[shm] + ' && exec "$@"', "sh", *argv, "--dry-run"],
        env=build.environ(TMPDIR=str(tmpdir)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    plan = result.stdout.split("-----> Plan\n", 1)[1].split("----->", 1)[0]
    assert (
        f"       Key dir: {tmpdir}/deploykey-XXXXXXXX (0700), each key in an ssh agent of the "
        f"build's own, its socket there (/dev/shm cannot hold the key ({reason})); ssh config:\n"
    ) in plan
    assert f"{tmpdir}/deploykey-XXXXXXXX/id_deploy_key.pub" in plan
    assert f"{tmpdir}/deploykey-XXXXXXXX/agent.sock" in plan
    assert "/dev/shm" not in plan.replace(f"/dev/shm cannot hold the key ({reason})", "")
    assert list(tmpdir.glob("deploykey-*")) == []
    clean(build, utils_key, result, before)


# ---------------------------------------------------------------- links planted where the kit writes


def test_planted_ssh_dir_link_is_never_used(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    before = key_dirs()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (build.home / ".ssh").symlink_to(target)
    build.set_key(utils_key.text)
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(target.iterdir()) == []
    clean(build, utils_key, result, before)


def test_planted_app_path_link_is_refused(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    before = key_dirs()
    target = tmp_path / "elsewhere"
    target.mkdir()
    build.app_path.symlink_to(target)
    build.set_key(utils_key.text)
    state = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1
    assert (
        f" !     {build.app_path} is a symbolic link; deploykey will not write through it"
        in result.stderr
    )
    assert list(target.iterdir()) == []
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_planted_export_link_is_refused(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    before = key_dirs()
    target = tmp_path / "victim"
    target.write_text("untouched\n")
    export = KIT / "export"
    export.symlink_to(target)
    try:
        build.set_key(utils_key.text)
        build.set_key("off", "DEPLOYKEY_INSTALL")
        result = build.compile()
    finally:
        export.unlink()
    assert result.returncode == 1
    assert f"{export} is a symbolic link" in result.stderr
    assert target.read_text() == "untouched\n"
    clean(build, utils_key, result, before)


# ---------------------------------------------------------------- HOME, ENV_DIR, requirements


def test_compile_needs_no_home(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    result = build.compile(env=build.environ(HOME=str(build.root / "no-such-home")))
    assert result.returncode == 0, result.stdout + result.stderr
    clean(build, utils_key, result, before)


def test_hook_with_a_home_it_cannot_write(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    subprocess.run(
        [str(BIN / "deploykey"), "hooks", str(build.app)], check=True, capture_output=True
    )
    build.set_key(utils_key.text)
    (build.root / "a-file").write_text("")
    home = (
        build.root / "a-file" / "home"
    )  # cannot exist, whatever else runs (rustup makes ~/.rustup)
    env = {
        **build.environ(),
        "ENV_DIR": str(build.env_dir),
        "CACHE_DIR": str(build.cache),
        "HOME": str(home),
    }
    result = subprocess.run(
        [str(build.app / "bin" / "pre_compile")],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f" !     Cannot write {home / '.gitconfig'}" in result.stderr
    clean(build, utils_key, result, before)


def test_env_dir_that_is_not_a_directory_or_file(build: Build, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(fifo)],
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f" !     The env dir {fifo} cannot be read" in result.stderr
    assert "It is neither a directory nor a file." in result.stderr


def test_env_dir_unreadable_for_the_build_user(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """As the (non-root) build user: root reads everything, so the test runs the build as `cnb`."""
    from support.cnb import cnb_user

    user = cnb_user()
    root = Path("/tmp") / f"deploykey-unreadable-{os.getpid()}"
    try:
        (root / "env").mkdir(parents=True)
        (root / "env" / "DEPLOY_KEY").write_text(utils_key.text)
        (root / "env").chmod(0o700)  # root's, and private
        (root / "app").mkdir()
        (root / "app" / "requirements.txt").write_text(REQUIREMENT + "\n")
        root.chmod(0o755)
        argv = [
            str(BIN / "compile"),
            str(root / "app"),
            str(root / "cache"),
            str(root / "env"),
            "--dry-run",
        ]
        result = subprocess.run(
            argv,
            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            user=user.pw_uid,
            group=user.pw_gid,
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
    if "No such file" in result.stderr and str(BIN) in result.stderr:
        pytest.fail("the kit is not readable by the build user")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f" !     The env dir {root / 'env'} cannot be read" in result.stderr
    assert (
        f"Make {root / 'env'} readable by the user running the build (uid {user.pw_uid})"
        in result.stderr
    )


def test_missing_requirements_file(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").unlink()
    state = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1
    assert " !     No requirements.txt in the app" in result.stderr
    assert "The app dir holds: deploykey.yml." in result.stderr
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_requirements_file_that_is_a_directory(build: Build, utils_key: GeneratedKey) -> None:
    """It said 'No requirements.txt in the app' and then listed requirements.txt."""
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").unlink()
    (build.app / "requirements.txt").mkdir()
    (build.app / "requirements.txt" / "prod.txt").write_text(REQUIREMENT + "\n")
    state = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1, result.stdout + result.stderr
    assert " !     requirements.txt in the app is not a file: it is a directory" in result.stderr
    assert (
        "Fix: Make requirements.txt a file listing the app's requirements, or set "
        "DEPLOYKEY_REQUIREMENTS to the file to install (e.g. requirements.txt/prod.txt)."
    ) in result.stderr
    assert "(requirements::not-a-file: README.md#requirements-not-a-file)" in result.stderr
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_a_dotenv_with_a_quote_never_closed(build: Build, utils_key: GeneratedKey) -> None:
    """python-dotenv logged 'could not parse statement' (at the key's own lines, too) and the key
    was then missing: the error names the file and the line, and shows no line of it."""
    env_file = build.root / "local.env"
    env_file.write_text("NAME='never closed\nDEPLOY_KEY='" + utils_key.text + "'\n")
    argv = [str(BIN / "compile"), str(build.app), str(build.cache), str(env_file), "--dry-run"]
    result = subprocess.run(argv, env=build.environ(), capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f" !     {env_file}:1 cannot be read as a .env line" in result.stderr
    assert "(env::dotenv: README.md#env-dotenv)" in result.stderr
    assert "could not parse" not in out and "No deploy key" not in out
    assert "never closed" not in out
    assert not text_has_key(out, utils_key.text)


@pytest.mark.parametrize(
    ("where", "shown"),
    [("hostname", "hostname '127.0.0.1\\n'"), ("name", "hosts: 'github.com\\n'")],
)
def test_a_newline_in_a_host_field_of_deploykey_yml(
    build: Build, utils_key: GeneratedKey, where: str, shown: str
) -> None:
    """`hostname: |` (a YAML block scalar ends in a newline) passed the check (`$` matches before
    a final newline), went into ssh_config and split the messages that name it."""
    build.set_key(utils_key.text)
    yml = build.server.deploykey_yml()
    if where == "hostname":
        yml = yml.replace("hostname: 127.0.0.1", "hostname: |\n      127.0.0.1")
    else:
        yml = yml.replace("  github.com:", '  "github.com\\n":')
    (build.app / "deploykey.yml").write_text(yml)
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    [title] = [line for line in result.stderr.splitlines() if "is not valid" in line]
    assert shown in title
    assert title.endswith(
        "holds a newline; write it on one line, without quotes or `|` that add one"
    )
    assert "(config::invalid: README.md#config-invalid)" in result.stderr


def test_an_ssh_option_as_the_user_name_is_refused_before_any_ssh(
    build: Build, utils_key: GeneratedKey, keys_dir: Path
) -> None:
    """`git+ssh://-oProxyCommand=x@host/repo`: `-oProxyCommand=x@alias` on ssh's command line is
    an option that runs a command (git refused it as a 'strange hostname', and the build said to
    check that the host is reachable). Refused as a user name before any ssh runs: a second key
    would have made deploykey greet the host as that user."""
    before = key_dirs()
    build.set_key(utils_key.text)
    build.set_key(make_key(keys_dir).text, "DEPLOY_KEY_OTHER")
    (build.app / "requirements.txt").write_text(
        "private-utils @ git+ssh://-oProxyCommand=x@github.com/acme/private-utils.git@v1.0\n"
    )
    state = snapshot(build.app)
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (
        " !     requirements.txt:1: `-oProxyCommand=x` is not a valid ssh user name"
        in result.stderr
    )
    assert (
        "Fix: Write the user the git host expects (GitHub, GitLab and Bitbucket: `git`): "
        "`git+ssh://git@github.com/acme/private-utils.git@v1.0`."
    ) in result.stderr
    assert "(requirements::ssh-user: README.md#requirements-ssh-user)" in result.stderr
    assert "reachable" not in out and "Fetching" not in out
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_scp_like_typo_fails_before_installing(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        REQUIREMENT.replace("github.com/acme", "github.com:acme") + "\n"
    )
    state = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1
    assert "uses a colon after the host" in result.stderr
    assert (
        "Fix: Write it as `git+ssh://git@github.com/acme/private-utils.git@v1.0`." in result.stderr
    )
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_a_host_with_no_trusted_key_is_never_asked(build: Build, utils_key: GeneratedKey) -> None:
    """No trust on first use: a requirement on a host with no pinned key and none in deploykey.yml
    fails with host::unknown before any connection to it (a listener there sees none)."""
    import socket

    before = key_dirs()
    build.set_key(utils_key.text)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        (build.app / "requirements.txt").write_text(
            f"private-utils @ git+ssh://git@127.0.0.1:{port}/acme/private-utils.git@v1.0\n"
        )
        state = snapshot(build.app)
        result = build.compile()
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing connected
    assert result.returncode == 1, result.stdout + result.stderr
    assert " !     No trusted host key for 127.0.0.1\n" in result.stderr
    assert "(host::unknown: README.md#host-unknown)" in result.stderr
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


@pytest.mark.parametrize("joined", [False, True], ids=["lines", "one-line"])
def test_a_key_pasted_into_deploykey_yml_is_named_never_printed(
    build: Build, utils_key: GeneratedKey, keys_dir: Path, joined: bool
) -> None:
    """A private key under `keys:` in deploykey.yml (read before any key is known to the
    redactor): the error names the config var, says to rotate, and prints no line of the key,
    also when the YAML joins its lines into one string."""
    before = key_dirs()
    build.set_key(utils_key.text)
    pasted = make_key(keys_dir)  # a key the build does not otherwise know
    body = "\n".join("    " + line for line in pasted.text.splitlines())
    value = f"'{' '.join(pasted.text.split())}'" if joined else f"|\n{body}"
    (build.app / "deploykey.yml").write_text(
        build.server.deploykey_yml() + f"keys:\n  DEPLOY_KEY_UTILS: {value}\n"
    )
    state = snapshot(build.app)
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "deploykey.yml holds a private key (under keys: DEPLOY_KEY_UTILS)" in out
    assert "Treat the key as exposed" in out
    assert "(config::key-inside: README.md#config-key-inside)" in out
    assert not text_has_key(out, pasted.text) and "PRIVATE KEY-----" not in out
    assert snapshot(build.app) == state
    clean(build, utils_key, result, before)


def test_a_host_spelled_in_capitals_installs_from_the_mirror(
    build: Build, utils_key: GeneratedKey
) -> None:
    """`GitHub.COM` is github.com (host names are case-insensitive): fetched with the key like
    github.com, and the installer, which asks git for the URL as written, gets the mirror (git's
    insteadOf compares case-sensitively); no ssh to the real GitHub."""
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        REQUIREMENT.replace("github.com", "GitHub.COM") + "\n"
    )
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Successfully installed private-utils-1.0" in out
    assert "Could not resolve hostname" not in out
    clean(build, utils_key, result, before)
    ran = build.run_app("import private_utils; print(private_utils.hello())")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr


def test_a_host_that_accepts_and_never_answers_fails_instead_of_hanging(
    build: Build, utils_key: GeneratedKey
) -> None:
    """A TCP server that accepts every connection and never sends a byte (a stuck proxy, a
    firewall that swallows the banner): the fetch gives up after ssh's ConnectTimeout and the
    build fails naming the host, with the keys removed. The subprocess timeout only tells a hang
    from an answer (it hung before)."""
    with silent_server() as (port, accepted):
        before = key_dirs()
        build.set_key(utils_key.text)
        yml = build.server.deploykey_yml().replace(f"port: {build.server.port}", f"port: {port}")
        (build.app / "deploykey.yml").write_text(yml)
        result = build.compile(timeout=180)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"Connection to 127.0.0.1 port {port} timed out" in out
    assert f"check that 127.0.0.1:{port} is reachable" in out
    assert accepted  # it did connect: the wait was for the server's answer
    clean(build, utils_key, result, before)


# ---------------------------------------------------------------- the build's surroundings


def test_xtrace_in_the_calling_shell(build: Build, utils_key: GeneratedKey) -> None:
    """`set -x` in the shell that runs the build, exported to every bash below it: the traces
    show commands and paths, never the key."""
    before = key_dirs()
    build.set_key(utils_key.text)
    env = build.environ(SHELLOPTS="xtrace", PS4="+ ")
    command = f"set -x; {BIN / 'compile'} {build.app} {build.cache} {build.env_dir}"
    result = subprocess.run(["bash", "-x", "-c", command], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # The trace is there: bin/compile's last line, with the python3 it chose (python3.sh).
    assert re.search(r"^\+ exec /\S*/python3 -I ", result.stderr, re.MULTILINE), result.stderr
    clean(build, utils_key, result, before)


def test_no_process_ever_shows_the_key(build: Build, utils_key: GeneratedKey) -> None:
    """A watcher reads every process's command line (world-readable) and environment while the
    build runs, including pip, git, ssh and the build backends they start."""
    before = key_dirs()
    build.set_key(utils_key.text)
    fragments = key_fragments(utils_key.text)
    seen: list[str] = []
    done = threading.Event()
    looked = [0]

    def watch() -> None:
        while not done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                for name in ("cmdline", "environ"):
                    try:
                        data = (proc / name).read_bytes()
                    except OSError:
                        continue
                    looked[0] += 1
                    if any(fragment in data for fragment in fragments):
                        seen.append(f"{proc.name}/{name}: {(proc / 'cmdline').read_bytes()[:80]!r}")
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = build.compile()
    finally:
        done.set()
        watcher.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert looked[0] > 1000
    assert seen == []
    clean(build, utils_key, result, before)
