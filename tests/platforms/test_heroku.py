"""bin/detect, bin/compile and bin/release end to end, against the real sshd git server."""

from __future__ import annotations

import base64
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    BIN,
    KIT,
    REQUIREMENT,
    Build,
    GeneratedKey,
    files_with_key,
    key_dirs,
    make_key,
    snapshot,
    text_has_key,
)


def assert_clean(
    build: Build, key: GeneratedKey, result: subprocess.CompletedProcess[str], before: set[str]
) -> None:
    """After any build: no key in the app, the cache, the output, and no key dir left anywhere."""
    assert files_with_key([build.app, build.cache], key.text) == []
    assert not text_has_key(result.stdout + result.stderr, key.text)
    assert key_dirs() - before == set()


# ---------------------------------------------------------------- detect and release


def test_detect_finds_ssh_requirement(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask\n" + REQUIREMENT + "\n")
    result = subprocess.run([BIN / "detect", tmp_path], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "deploykey\n")


def test_detect_follows_includes_and_deploykey_yml(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("-r requirements/prod.txt\n")
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "prod.txt").write_text(
        "-e " + REQUIREMENT.split(" @ ")[1] + "#egg=private-utils\n"
    )
    assert subprocess.run([BIN / "detect", tmp_path], capture_output=True).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "deploykey.yml").write_text("hosts: {}\n")
    assert subprocess.run([BIN / "detect", other], capture_output=True).returncode == 0


def test_detect_says_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("flask==3.0\ngit+https://github.com/pallets/click\n")
    (tmp_path / "app.py").write_text("")
    result = subprocess.run([BIN / "detect", tmp_path], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "deploykey: no private git dependency over ssh in this app",
        "  looked for deploykey.yml and git+ssh:// URLs in requirements files, pyproject.toml, "
        "setup.cfg, uv.lock, poetry.lock, Pipfile, Pipfile.lock and pylock.toml",
        "  manifests read: requirements.txt",
        "  the app dir holds: app.py, requirements.txt",
    ]


def test_release_is_valid_empty_yaml(tmp_path: Path) -> None:
    result = subprocess.run(
        [BIN / "release", tmp_path],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout) == {}


# ---------------------------------------------------------------- compile: the real thing


def test_compile_installs_with_base64_key_then_scrubs(
    build: Build, utils_key: GeneratedKey
) -> None:
    before = key_dirs()
    build.set_key(base64.b64encode(utils_key.text.encode()).decode())
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    assert "repaired: decoded the key from base64" in out
    assert "requirements.txt:1  github.com/acme/private-utils @ v1.0" in out  # checked first
    assert "Successfully installed private-utils-1.0" in out
    assert "no key material found" in out
    assert_clean(build, utils_key, result, before)
    ran = build.run_app("import private_utils; print(private_utils.hello())")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    # The slug runs at its run-time path: console scripts and pyvenv.cfg say so, not the build dir.
    assert str(build.app) not in (build.app / ".venv" / "bin" / "pip").read_text()
    assert f"{build.app_path}/.venv/bin" in (build.app / ".profile.d" / "deploykey.sh").read_text()


def test_compile_installs_with_raw_key_and_hostile_environment(
    build: Build, utils_key: GeneratedKey, keys_dir: Path
) -> None:
    """A raw key without its final newline, with an agent, GIT_SSH_COMMAND and a ~/.ssh/config that
    would each send ssh elsewhere if the kit let them."""
    before = key_dirs()
    build.set_key(utils_key.text.rstrip("\n"))
    (build.home / ".ssh").mkdir()
    (build.home / ".ssh" / "config").write_text(
        "Host github.com\n  HostName 192.0.2.1\n  IdentityFile ~/.ssh/other\n"
    )
    (build.home / ".gitconfig").write_text("[core]\n\tsshCommand = false\n[user]\n\tname = Someone")
    # (only the user's files: pip itself runs `rustc --version`, which may create ~/.rustup)
    homes = snapshot(build.home / ".ssh", build.home / ".gitconfig")
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    sock = agent.split("SSH_AUTH_SOCK=")[1].split(";")[0]
    pid = agent.split("SSH_AGENT_PID=")[1].split(";")[0]
    try:
        # The agent holds a key the server does NOT accept: used first, it would fail the build.
        stranger = make_key(keys_dir)
        subprocess.run(
            ["ssh-add", "-q", str(stranger.path)], env={"SSH_AUTH_SOCK": sock}, check=True
        )
        env = build.environ(
            SSH_AUTH_SOCK=sock, GIT_SSH_COMMAND="false", GIT_SSH="false", DEPLOY_KEY="not-a-key"
        )
        result = build.compile(env=env)
    finally:
        os.kill(int(pid), signal.SIGTERM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "repaired: added the missing final newline" in result.stdout
    assert "Successfully installed private-utils-1.0" in result.stdout
    assert snapshot(build.home / ".ssh", build.home / ".gitconfig") == homes  # byte-identical
    assert_clean(build, utils_key, result, before)


def test_pip_and_build_backends_never_see_the_key(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "env-dumper @ git+ssh://git@github.com/acme/env-dumper.git@v1.0\n"
    )
    env = build.environ(DEPLOY_KEY=utils_key.text, DEPLOY_KEY_OTHER="x")
    result = build.compile(env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    saw = (build.home / "backend-saw.json").read_text()
    assert "DEPLOY_KEY" not in saw
    assert not text_has_key(saw, utils_key.text)
    assert_clean(build, utils_key, result, before)


def test_host_key_mismatch_fails_before_installing(
    build: Build, utils_key: GeneratedKey, keys_dir: Path
) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    impostor = make_key(keys_dir)  # any ed25519 key that is not the server's host key
    yml = build.server.deploykey_yml().replace(build.server.host_key_public, impostor.public)
    (build.app / "deploykey.yml").write_text(yml)
    app_before = snapshot(build.app, build.cache)
    result = build.compile()
    assert result.returncode == 1
    server_fp = subprocess.run(
        ["ssh-keygen", "-lf", "-"],
        input=build.server.host_key_public,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    err = result.stderr
    assert " !     Host key verification failed for github.com" in err
    assert f"showed a host key ({server_fp})" in err
    assert impostor.fingerprint in err
    assert (
        "rotated its key" in err
        and "known_hosts:" in err
        and "Never turn host key checking off" in err
    )
    assert "(host::mismatch: README.md#host-mismatch)" in err
    assert snapshot(build.app, build.cache) == app_before  # nothing installed
    assert_clean(build, utils_key, result, before)


def test_failing_pip_still_scrubs(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    # Every private requirement checks out; pip then fails on a package no index has.
    (build.app / "requirements.txt").write_text(REQUIREMENT + "\nno-such-package-anywhere==1.0\n")
    app_before = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1
    assert "requirements.txt:1  github.com/acme/private-utils @ v1.0" in result.stdout
    assert " !     pip failed with exit status 1" in result.stderr
    assert "removed the key dir" in result.stdout
    assert snapshot(build.app) == app_before  # the half-built venv went with the failure
    assert_clean(build, utils_key, result, before)


def test_key_for_another_repository_is_named(
    build: Build, git_server: object, keys_dir: Path
) -> None:
    from support.gitserver import GitServer

    assert isinstance(git_server, GitServer)
    other = make_key(keys_dir)
    git_server.grant(other.label, other.public, ["acme/other-lib"])
    before = key_dirs()
    build.set_key(other.text)
    result = build.compile()
    assert result.returncode == 1
    assert " !     1 of 1 private requirements cannot be fetched" in result.stderr
    assert (
        f"requirements.txt:1 github.com/acme/private-utils @ v1.0: the key {other.fingerprint} "
        "(DEPLOY_KEY) is valid, but for another repository: github.com answered `Repository not "
        "found` for acme/private-utils. github.com says it opens acme/other-lib." in result.stderr
    )
    assert_clean(build, other, result, before)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_install_scrubs(build: Build, utils_key: GeneratedKey, signum: int) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "slow-lib @ git+ssh://git@github.com/acme/slow-lib.git@v1.0\n"
    )
    process = subprocess.Popen(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir)],
        env=build.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (build.home / "slow-started").exists():
        assert time.monotonic() < deadline and process.poll() is None, (
            "the slow build never started"
        )
        time.sleep(0.1)
    assert key_dirs() - before == set(), "the keys are removed before pip starts"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert f" !     The build was interrupted by {signal.Signals(signum).name}" in stderr
    assert_clean(build, utils_key, subprocess.CompletedProcess([], 0, stdout, stderr), before)
    # pip's build backend (a grandchild) was stopped with it, not left running.
    left = subprocess.run(["pgrep", "-f", str(build.root)], capture_output=True, text=True).stdout
    assert left == ""


def test_dry_run_changes_no_byte(build: Build, utils_key: GeneratedKey) -> None:
    before = key_dirs()
    build.set_key(utils_key.text)
    (build.home / ".gitconfig").write_text("[user]\n\tname = x\n")
    state = snapshot(build.app, build.cache, build.env_dir, build.home, build.app_path.parent)
    result = build.compile("--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        snapshot(build.app, build.cache, build.env_dir, build.home, build.app_path.parent) == state
    )
    assert key_dirs() == before
    out = result.stdout
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    assert f"github.com -> 127.0.0.1:{build.server.port}" in out
    assert "|   StrictHostKeyChecking yes" in out and "|   IdentitiesOnly yes" in out
    assert "requirements.txt:1: ssh://git@github.com/acme/private-utils.git @ v1.0" in out
    assert "via DEPLOY_KEY" in out and ": ok, v1.0 is " in out  # the dry run checked it
    assert f"Install: {build.app_path}/.venv (venv; no .heroku/python in the app)" in out
    assert "  package manager: uv or pip, for a requirements file (requirements.txt decides)" in out
    assert f"  runs: pip install --requirement {build.app / 'requirements.txt'} (DEPLOYKEY_" in out
    assert not text_has_key(out + result.stderr, utils_key.text)


def test_dry_run_from_dotenv_file_and_env_switch(build: Build, utils_key: GeneratedKey) -> None:
    dotenv = build.root / "local.env"
    dotenv.write_text('DEPLOY_KEY="' + utils_key.text.replace("\n", "\\n") + '"\n')
    state = snapshot(build.app, build.cache, build.home)
    result = subprocess.run(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(dotenv)],
        env=build.environ(DEPLOYKEY_DRY_RUN="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "(dry run)" in result.stdout and utils_key.fingerprint in result.stdout
    assert snapshot(build.app, build.cache, build.home) == state


def test_dry_run_gives_the_same_errors(build: Build, utils_key: GeneratedKey) -> None:
    build.set_key(utils_key.path.with_suffix(".pub").read_text())
    result = build.compile("--dry-run")
    assert result.returncode == 1
    assert (
        f" !     {build.env_dir}/DEPLOY_KEY holds a public key, not a private key" in result.stderr
    )


def test_bad_keys_fail_before_anything_is_written(build: Build, keys_dir: Path) -> None:
    encrypted = make_key(keys_dir, passphrase="secret")
    cases = {
        "": "is empty",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me": "holds a public key",
        encrypted.text: "is protected by a passphrase",
        "not a key at all!": "is neither a private key nor base64 of one",
        base64.b64encode(
            b"hello world, this is not a key"
        ).decode(): "is neither a private key nor base64 of one",
    }
    before = key_dirs()
    for value, title in cases.items():
        state = snapshot(build.app, build.cache, build.home)
        build.set_key(value)
        result = build.compile()
        assert result.returncode == 1, value
        assert f" !     {build.env_dir}/DEPLOY_KEY {title}" in result.stderr
        assert "Fix: " in result.stderr
        assert snapshot(build.app, build.cache, build.home) == state
        assert key_dirs() == before
        assert not text_has_key(result.stdout + result.stderr, encrypted.text)


def test_missing_key_and_missing_env_dir(build: Build) -> None:
    result = build.compile()
    assert result.returncode == 1
    assert f" !     No deploy key: {build.env_dir} has no DEPLOY_KEY" in result.stderr
    result = subprocess.run(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(build.root / "nope")],
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f" !     The env dir {build.root / 'nope'} does not exist" in result.stderr


def test_usage_error_exits_2(build: Build) -> None:
    result = subprocess.run(
        [str(BIN / "compile"), str(build.app)], env=build.environ(), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "the following arguments are required: CACHE_DIR, ENV_DIR" in result.stderr


# ---------------------------------------------------------------- compile: where it installs


def test_installs_into_python_of_an_earlier_buildpack(
    build: Build, utils_key: GeneratedKey
) -> None:
    """After heroku/python: .heroku/python exists; pip runs from its run-time path, via a link."""
    before = key_dirs()
    subprocess.run(
        [sys.executable, "-m", "venv", str(build.app / ".heroku" / "python")], check=True
    )
    build.set_key(utils_key.text)
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(python; the Python installed by an earlier buildpack)" in result.stdout
    assert not (build.app / ".venv").exists()
    assert not build.app_path.exists() and not build.app_path.is_symlink()  # the link is gone
    site = list(
        (build.app / ".heroku" / "python" / "lib").glob("python3*/site-packages/private_utils")
    )
    assert site, "private_utils should be in .heroku/python"
    assert_clean(build, utils_key, result, before)


def test_venv_built_at_an_existing_app_path_is_moved_into_the_slug(
    build: Build, utils_key: GeneratedKey
) -> None:
    """Heroku's layout: /app exists (it is HOME) and is not the build dir."""
    before = key_dirs()
    build.app_path.mkdir(parents=True)
    build.set_key(utils_key.text)
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (build.app_path / ".venv").exists()
    assert (build.app / ".venv" / "bin" / "python").exists()
    build.app_path.rmdir()
    ran = build.run_app("import private_utils, sys; print(private_utils.hello(), sys.prefix)")
    assert ran.stdout.split() == [
        "hello",
        "from",
        "private-utils",
        str(build.app_path / ".venv"),
    ], ran.stderr
    assert_clean(build, utils_key, result, before)


def test_handoff_to_the_next_buildpack_through_export(
    build: Build, utils_key: GeneratedKey
) -> None:
    """Before heroku/python: the private repositories are fetched into mirrors in the cache and the
    keys removed; the export hands over only git settings that point at the mirrors, and pip in
    the next buildpack (another process, env from the export only) installs from them."""
    before = key_dirs()
    export = KIT / "export"
    build.set_key(utils_key.text)
    build.set_key("off", name="DEPLOYKEY_INSTALL")
    try:
        result = build.compile()
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            f"wrote {export}: the git settings for the next buildpack (DEPLOYKEY_INSTALL=off)"
            in result.stdout
        )
        assert key_dirs() - before == set()  # nothing for the next buildpack's code to find
        assert not (build.app / ".venv").exists()
        handed = export.read_text()
        assert not text_has_key(handed, utils_key.text)
        assert "GIT_SSH_COMMAND" not in handed and "GIT_CONFIG_COUNT" in handed
        venv = build.root / "python-buildpack"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = f". {export} && {venv}/bin/pip install --no-cache-dir --no-input -r requirements.txt"
        env = {k: v for k, v in build.environ().items() if k != "DEPLOYKEY_APP_PATH"}
        installed = subprocess.run(
            ["bash", "-c", pip], cwd=build.app, env=env, capture_output=True, text=True
        )
        assert installed.returncode == 0, installed.stdout + installed.stderr
        direct_url = next(venv.rglob("private_utils-1.0.dist-info/direct_url.json")).read_text()
        assert "ssh://git@github.com/acme/private-utils.git" in direct_url  # never the mirror
        assert "mirrors" not in direct_url
        assert files_with_key([build.app, build.cache, build.home], utils_key.text) == []
    finally:
        export.unlink(missing_ok=True)


def test_editable_installs_work_at_the_run_time_path(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """`-e .` and `-e git+ssh://...` in a venv build: the slug moves to the run-time path and the
    build dir is gone; the profile script points the editable paths there, as heroku-buildpack-python
    v351 does (bin/compile), and both import."""
    from conftest import flit_package

    before = key_dirs()
    for relative, text in flit_package("own_app", "0.1", 'WHERE = "own"\n').items():
        path = build.app / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (build.app / "requirements.txt").write_text(
        "-e .\n-e git+ssh://git@github.com/acme/private-utils.git@v1.0#egg=private-utils\n"
    )
    build.set_key(utils_key.text)
    build.set_key("venv", name="DEPLOYKEY_INSTALL")
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    profile = (build.app / ".profile.d" / "deploykey.sh").read_text()
    assert "sed -i" in profile  # `-e .` names the build dir until boot
    # The slug, extracted at the run-time path; the build dir is gone.
    build.app_path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(build.app), str(build.app_path)], check=True)
    subprocess.run(["mv", str(build.app), str(tmp_path / "gone")], check=True)
    code = "import own_app, private_utils; print(own_app.WHERE, private_utils.hello())"
    boot = f". .profile.d/deploykey.sh && python -c {shlex.quote(code)}"
    ran = subprocess.run(
        ["bash", "-c", boot],
        cwd=build.app_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert ran.stdout.strip() == "own hello from private-utils", ran.stdout + ran.stderr
    site = next((build.app_path / ".venv" / "lib").glob("python*/site-packages"))
    named = "".join(p.read_text() for p in site.glob("*.pth")) + "".join(
        p.read_text() for p in site.glob("__editable__*_finder.py")
    )
    assert str(tmp_path / "gone") not in named and str(build.app) not in named
    subprocess.run(["mv", str(tmp_path / "gone"), str(build.app)], check=True)
    assert_clean(build, utils_key, result, before)
