"""deploykey's own git reads no configuration and runs no program it did not choose (sealedgit.py).

Each check runs real git twice: sealed, and (the control, proving the test can fail) with the
plain allow-list environment the fetch had before, which obeys what was planted.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from deploykey.core import childenv
from deploykey.fetch import mirrors, sealedgit
from deploykey.manifests import requirements

RULES = '[deploykey "planted"]\n\tmarker = {where}\n'


def git(argv: list[str], env: dict[str, str], prefix: list[str] | None = None) -> str:
    done = subprocess.run(
        [*(prefix or []), "git", *argv], env=env, capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


def bind(source: Path, target: str) -> list[str]:
    """Run in a mount namespace of its own with `source` over `target`: the machine's files, which
    other builds read, are never touched."""
    mount = f'mount --bind {shlex.quote(str(source))} {target} && exec "$@"'
    return ["unshare", "-m", "sh", "-c", mount, "sh"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME where build code wrote every per-user git config git knows of."""
    home = tmp_path / "home"
    xdg = tmp_path / "xdg"
    for path, where in (
        (home / ".gitconfig", "home"),
        (home / ".config" / "git" / "config", "dot-config"),
        (xdg / "git" / "config", "xdg"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RULES.format(where=where))
    monkeypatch.setenv("HOME", str(home))
    return home


def test_no_global_xdg_or_included_config(home: Path, tmp_path: Path) -> None:
    """GIT_CONFIG_GLOBAL=/dev/null replaces ~/.gitconfig, $XDG_CONFIG_HOME/git/config and
    ~/.config/git/config alike (git reads both of the latter as "global")."""
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    listed = ["config", "--list", "--show-origin"]
    plain = git(listed, childenv.child_env(xdg))
    assert "marker=home" in plain and "marker=xdg" in plain
    plain = git(listed, childenv.child_env())  # no XDG_CONFIG_HOME: ~/.config/git/config
    assert "marker=dot-config" in plain
    for extra in (xdg, {}):
        assert "marker" not in git(listed, sealedgit.env(extra))
    # An include from ~/.gitconfig (include.path chains) is not followed either.
    (home / ".gitconfig").write_text(f"[include]\n\tpath = {home / 'more.inc'}\n")
    (home / "more.inc").write_text(RULES.format(where="included"))
    assert "marker=included" in git(listed, childenv.child_env())
    assert "marker" not in git(listed, sealedgit.env())


def test_no_system_config(tmp_path: Path) -> None:
    planted = tmp_path / "gitconfig"
    planted.write_text(RULES.format(where="system"))
    listed = ["config", "--list"]
    assert "marker=system" in git(listed, childenv.child_env(), bind(planted, "/etc/gitconfig"))
    assert "marker" not in git(listed, sealedgit.env(), bind(planted, "/etc/gitconfig"))


def test_no_template_dir(tmp_path: Path) -> None:
    """`git clone` copies the template dir's `config` into the new mirror before it fetches: a
    root build can write /usr/share/git-core/templates."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "config").write_text(RULES.format(where="template"))
    system = git(["--exec-path"], childenv.child_env()).strip()
    target = str(Path(system).parents[1] / "share" / "git-core" / "templates")
    if not Path(target).is_dir():
        target = "/usr/share/git-core/templates"
    for env, name in ((childenv.child_env(), "plain.git"), (sealedgit.env(), "sealed.git")):
        git(["init", "--quiet", "--bare", str(tmp_path / name)], env, bind(templates, target))
    assert "marker = template" in (tmp_path / "plain.git" / "config").read_text()
    assert "marker" not in (tmp_path / "sealed.git" / "config").read_text()


@pytest.mark.parametrize("protocol", ["ext", "file"])
def test_only_the_protocols_allowed(tmp_path: Path, protocol: str) -> None:
    """`protocol.ext.allow=always` (and file) from any config is overridden by the allow-list."""
    marker = tmp_path / "ran"
    bare = tmp_path / "repo.git"
    git(["init", "--quiet", "--bare", str(bare)], childenv.child_env())
    url = f"ext::sh -c touch% {marker}" if protocol == "ext" else f"file://{bare}"
    allow = mirrors.as_env([(f"protocol.{protocol}.allow", "always")])
    plain = git(["ls-remote", url], childenv.child_env(allow))
    assert marker.exists() if protocol == "ext" else "fatal" not in plain
    marker.unlink(missing_ok=True)
    for protocols in ((), ("ssh",), ("ssh", "https", "http")):
        said = git(["ls-remote", url], sealedgit.env(allow, protocols))
        assert f"transport '{protocol}' not allowed" in said
        assert not marker.exists()


def test_nothing_from_the_environment_points_git_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GIT_DIR",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_EXEC_PATH",
        "GIT_CONFIG",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_PROXY_COMMAND",
        "GIT_ASKPASS",
        "SSH_ASKPASS",
        "GIT_TRACE",
        "GIT_TRACE_PACKET",
        "GIT_TEMPLATE_DIR",
        "GIT_ALLOW_PROTOCOL",
        "XDG_CONFIG_HOME",
        "SSH_AUTH_SOCK",
    ):
        monkeypatch.setenv(name, "/tmp/planted")
    env = sealedgit.env({"GIT_SSH_COMMAND": "sh /dev/shm/deploykey-x/ssh"}, ("ssh",))
    assert env["GIT_SSH_COMMAND"] == "sh /dev/shm/deploykey-x/ssh"
    assert "/tmp/planted" not in env.values()
    assert env["GIT_ALLOW_PROTOCOL"] == "ssh" and env["GIT_TEMPLATE_DIR"] == ""
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert sealedgit.argv("git", "fetch")[1:5] == [
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
    ]


@pytest.mark.parametrize(
    ("rule", "refused"),
    [
        # Common on laptops and CI runners: shorter than deploykey's own rule, which wins.
        ('[url "git@github.com:"]\n\tinsteadOf = https://github.com/\n', False),
        ('[url "ssh://git@github.com/"]\n\tinsteadOf = https://github.com/\n', False),
        # deploykey's own block (app hooks), left by a build with no post_compile: same target.
        (
            '[url "file://{root}/github.com/acme/x"]\n\tinsteadOf = ssh://git@github.com/acme/x\n',
            False,
        ),
        # As long as deploykey's, or longer: git would take it.
        ('[url "ext::sh -c evil"]\n\tinsteadOf = ssh://git@github.com/acme/x\n', True),
        ('[url "file:///elsewhere/x.git"]\n\tinsteadOf = ssh://git@github.com/acme/x.git\n', True),
        ('[url "https://evil.example/x"]\n\tinsteadOf = git@github.com:acme/x\n', True),
    ],
)
def test_only_a_planted_rule_that_beats_the_mirror_is_refused(
    home: Path, tmp_path: Path, rule: str, refused: bool
) -> None:
    root = tmp_path / "mirrors"
    [req] = requirements.read_text(
        "requirements.txt", "x @ git+ssh://git@github.com/acme/x.git@v1"
    ).git
    fetched = mirrors.Mirrors(
        root, ((req, root / "github.com" / "acme" / "x.git"),), (("ssh", "github.com"),)
    )
    (home / ".gitconfig").write_text(rule.format(root=root))
    error = mirrors.planted("git", fetched)
    assert (error is not None) == refused
    if error is not None:
        assert error.slug == "gitconfig::rewrite"
        assert error.facts["origin"] == str(home / ".gitconfig")
