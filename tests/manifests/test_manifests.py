"""Finding the private git dependencies in every manifest and lockfile format an app may have."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploykey import manifests
from deploykey.core.errors import UserError
from deploykey.manifests import base
from deploykey.manifests.requirements import GitRequirement, Requirements
from support import installers

SHA_A = "0123456789abcdef0123456789abcdef01234567"
SHA_B = "89abcdef0123456789abcdef0123456789abcdef"


def app(tmp_path: Path, files: dict[str, str]) -> Path:
    """An app dir holding `files` (path -> text, dedented)."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def facts(found: Requirements) -> list[tuple[object, ...]]:
    return [_facts(req) for req in found.git + found.https]


def _facts(req: GitRequirement) -> tuple[object, ...]:
    return (req.where, req.name, req.remote, req.ref, req.commit, req.subdirectory)


def test_requirements_files_are_read_as_before(tmp_path: Path) -> None:
    found = manifests.read_all(
        app(
            tmp_path,
            {
                "requirements.txt": "-r requirements/base.txt\n",
                "requirements/base.txt": "flask\nx @ git+ssh://git@github.com/acme/x.git@v1.0\n",
            },
        )
    )
    assert found.files == ["requirements.txt", "requirements/base.txt"]
    assert facts(found) == [
        ("requirements/base.txt:2", "x", "ssh://git@github.com/acme/x.git", "v1.0", None, None)
    ]


PYPROJECT = """\
    [project]
    name = "app"
    dependencies = [
        "flask>=3",
        "utils @ git+ssh://git@github.com/acme/utils.git@v1.0#subdirectory=py",
        "uvdep",
    ]

    [project.optional-dependencies]
    web = ["webkit @ git+https://github.com/acme/webkit.git@main"]

    [dependency-groups]
    dev = [{include-group = "lint"}, "devtool @ git+ssh://git@gitlab.com/team/devtool.git"]
    lint = ["ruff"]

    [tool.uv.sources]
    uvdep = { git = "ssh://git@github.com/acme/uvdep.git", tag = "v2", subdirectory = "lib" }
    local = { path = "../local" }

    [[tool.uv.sources.other]]
    git = "ssh://git@git.example.com:2222/acme/other.git"
    rev = "abc1234"
    marker = "sys_platform == 'linux'"

    [tool.poetry.dependencies]
    python = "^3.10"
    scp = { git = "git@github.com:acme/scp.git", rev = "9f3c2e1" }
    multi = [
        { git = "git@github.com:acme/multi.git", branch = "py310", python = "<3.11" },
    ]

    [tool.poetry.group.test.dependencies]
    fixtures = { git = "https://github.com/acme/fix.git", branch = "dev", subdirectory = "pkg" }
"""


def test_pyproject_every_table(tmp_path: Path) -> None:
    found = manifests.read_all(app(tmp_path, {"pyproject.toml": PYPROJECT}))
    assert found.problems == []
    assert [_facts(req) for req in found.git] == [
        ("pyproject.toml:5", "utils", "ssh://git@github.com/acme/utils.git", "v1.0", None, "py"),
        ("pyproject.toml:13", "devtool", "ssh://git@gitlab.com/team/devtool.git", None, None, None),
        ("pyproject.toml:17", "uvdep", "ssh://git@github.com/acme/uvdep.git", "v2", None, "lib"),
        (
            "pyproject.toml:21",
            "other",
            "ssh://git@git.example.com:2222/acme/other.git",
            "abc1234",
            None,
            None,
        ),
        ("pyproject.toml:27", "scp", "ssh://git@github.com/acme/scp.git", "9f3c2e1", None, None),
        ("pyproject.toml:29", "multi", "ssh://git@github.com/acme/multi.git", "py310", None, None),
    ]
    assert [(_facts(req), req.scheme) for req in found.https] == [
        (
            (
                "pyproject.toml:10",
                "webkit",
                "https://github.com/acme/webkit.git",
                "main",
                None,
                None,
            ),
            "https",
        ),
        (
            (
                "pyproject.toml:33",
                "fixtures",
                "https://github.com/acme/fix.git",
                "dev",
                None,
                "pkg",
            ),
            "https",
        ),
    ]
    uvdep = found.git[2]
    assert (
        uvdep.pinned(SHA_A)
        == f"uvdep @ git+ssh://git@github.com/acme/uvdep.git@{SHA_A}#subdirectory=lib"
    )
    assert found.hosts == [("git.example.com", 2222), ("github.com", 22), ("gitlab.com", 22)]


def test_a_dependency_repository_is_read_for_its_metadata_only() -> None:
    """pip sees a dependency's Requires-Dist: [project] and Poetry's main group, not the rest."""
    found = manifests.read_repository_file(
        "pkg/pyproject.toml", textwrap.dedent(PYPROJECT), "github.com/acme/lib@0123456:pyproject"
    )
    assert [req.name for req in found.git + found.https] == ["utils", "scp", "multi", "webkit"]
    assert {req.file for req in found.git} == {"github.com/acme/lib@0123456:pyproject"}
    reqs = manifests.read_repository_file(
        "requirements.txt", "-r other.txt\nx @ git+ssh://git@github.com/acme/x.git@v3\n"
    )
    assert [(req.where, req.ref) for req in reqs.git] == [("requirements.txt:2", "v3")]
    with pytest.raises(ValueError, match="no manifest reader for Makefile"):
        manifests.read_repository_file("Makefile", "")


UV_LOCK = f"""\
    version = 1
    revision = 3
    requires-python = ">=3.10"

    [[package]]
    name = "app"
    version = "0.1.0"
    source = {{ virtual = "." }}
    dependencies = [
        {{ name = "first" }},
    ]

    [package.metadata]
    requires-dist = [{{ name = "first", git = "ssh://git@github.com/acme/first.git?tag=v1.0" }}]

    [[package]]
    name = "first"
    version = "1.0"
    source = {{ git = "ssh://git@github.com/acme/first.git?tag=v1.0#{SHA_A}" }}
    dependencies = [
        {{ name = "second" }},
        {{ name = "six" }},
    ]

    [[package]]
    name = "second"
    version = "2.0"
    source = {{ git = "ssh://git@github.com/acme/mo.git?subdirectory=l%2Fb&branch=r%2F2#{SHA_B}" }}

    [[package]]
    name = "six"
    version = "1.16.0"
    source = {{ registry = "https://pypi.org/simple" }}
"""


def test_uv_lock_transitive_pair_with_commits(tmp_path: Path) -> None:
    found = manifests.read_all(app(tmp_path, {"uv.lock": UV_LOCK}))
    assert facts(found) == [
        ("uv.lock:19", "first", "ssh://git@github.com/acme/first.git", "v1.0", SHA_A, None),
        ("uv.lock:28", "second", "ssh://git@github.com/acme/mo.git", "r/2", SHA_B, "l/b"),
    ]


def test_a_lockfile_entry_replaces_the_manifests_request(tmp_path: Path) -> None:
    pyproject = """\
        [project]
        name = "app"
        dependencies = ["first"]
        [tool.uv.sources]
        first = { git = "ssh://git@github.com/acme/first.git", tag = "v1.0" }
    """
    requirements = (
        "first @ git+ssh://git@github.com/acme/first.git@v1.0\n"
        "first @ git+ssh://git@github.com/acme/first.git@v0.9\n"
    )
    found = manifests.read_all(
        app(
            tmp_path,
            {"uv.lock": UV_LOCK, "pyproject.toml": pyproject, "requirements.txt": requirements},
        )
    )
    assert [(req.where, req.ref, req.commit) for req in found.git] == [
        ("requirements.txt:2", "v0.9", None),  # asks for another ref: kept
        ("uv.lock:19", "v1.0", SHA_A),
        ("uv.lock:28", "r/2", SHA_B),
    ]
    assert found.files == ["requirements.txt", "pyproject.toml", "uv.lock"]


POETRY_LOCK = f"""\
    # This file is automatically @generated by Poetry 2.1.3 and should not be changed by hand.

    [[package]]
    name = "first"
    version = "1.0"
    description = ""
    optional = false
    python-versions = ">=3.10"
    groups = ["main"]
    files = []
    develop = false

    [package.dependencies]
    second = {{git = "git@github.com:acme/mono.git", rev = "v2", subdirectory = "second"}}

    [package.source]
    type = "git"
    url = "git@github.com:acme/first.git"
    reference = "HEAD"
    resolved_reference = "{SHA_A}"

    [[package]]
    name = "second"
    version = "2.0"
    description = ""
    optional = false
    python-versions = ">=3.10"
    groups = ["main"]
    files = []
    develop = false

    [package.source]
    type = "git"
    url = "git@github.com:acme/mono.git"
    reference = "v2"
    resolved_reference = "{SHA_B}"
    subdirectory = "second"

    [[package]]
    name = "web"
    version = "3.0"
    description = ""
    optional = false
    python-versions = "*"
    groups = ["main"]
    files = []
    develop = false

    [package.source]
    type = "git"
    url = "https://github.com/acme/web.git"
    reference = "main"
    resolved_reference = "{SHA_B}"

    [metadata]
    lock-version = "2.1"
    python-versions = "^3.10"
    content-hash = "0000"
"""


def test_poetry_lock_transitive_pair_scp_like_and_https(tmp_path: Path) -> None:
    found = manifests.read_all(app(tmp_path, {"poetry.lock": POETRY_LOCK}))
    assert [_facts(req) for req in found.git] == [
        ("poetry.lock:18", "first", "ssh://git@github.com/acme/first.git", None, SHA_A, None),
        ("poetry.lock:34", "second", "ssh://git@github.com/acme/mono.git", "v2", SHA_B, "second"),
    ]
    assert [(_facts(req), req.scheme) for req in found.https] == [
        (("poetry.lock:51", "web", "https://github.com/acme/web.git", "main", SHA_B, None), "https")
    ]
    assert found.git[1].url == "git+ssh://git@github.com/acme/mono.git@v2"
    assert found.git[1].fragment == "#subdirectory=second"


def test_pipfile_and_its_lockfile(tmp_path: Path) -> None:
    pipfile = """\
        [[source]]
        url = "https://pypi.org/simple"
        verify_ssl = true
        name = "pypi"

        [packages]
        requests = "*"
        first = {git = "ssh://git@github.com/acme/first.git", ref = "v1.0", editable = true}

        [dev-packages]
        tool = {git = "git@github.com:acme/tool.git", subdirectory = "cli"}
    """
    lock = f"""\
        {{
            "_meta": {{
                "hash": {{"sha256": "00"}}, "pipfile-spec": 6, "requires": {{}}, "sources": []
            }},
            "default": {{
                "first": {{
                    "editable": true,
                    "git": "ssh://git@github.com/acme/first.git",
                    "ref": "{SHA_A}"
                }},
                "requests": {{"hashes": [], "version": "==2.32.3"}}
            }},
            "develop": {{}}
        }}
    """
    found = manifests.read_all(app(tmp_path, {"Pipfile": pipfile}))
    assert facts(found) == [
        ("Pipfile:8", "first", "ssh://git@github.com/acme/first.git", "v1.0", None, None),
        ("Pipfile:11", "tool", "ssh://git@github.com/acme/tool.git", None, None, "cli"),
    ]
    assert found.editable_vcs == ["Pipfile:8"]
    found = manifests.read_all(app(tmp_path, {"Pipfile.lock": lock}))
    assert facts(found) == [
        ("Pipfile:11", "tool", "ssh://git@github.com/acme/tool.git", None, None, "cli"),
        ("Pipfile.lock:8", "first", "ssh://git@github.com/acme/first.git", None, SHA_A, None),
    ]
    assert found.editable_vcs == ["Pipfile:8", "Pipfile.lock:8"]


def test_pylock_files(tmp_path: Path) -> None:
    pylock = f"""\
        lock-version = "1.0"
        created-by = "pdm"
        requires-python = ">=3.10"

        [[packages]]
        name = "first"
        version = "1.0"

        [packages.vcs]
        type = "git"
        url = "ssh://git@github.com/acme/first.git"
        requested-revision = "v1.0"
        commit-id = "{SHA_A}"
        subdirectory = "src/first"

        [[packages]]
        name = "local"
        vcs = {{ type = "git", path = "../local", commit-id = "{SHA_B}" }}
    """
    dev = f"""\
        lock-version = "1.0"
        created-by = "uv"
        [[packages]]
        name = "tool"
        vcs = {{ type = "git", url = "https://gitlab.com/team/tool.git", commit-id = "{SHA_B}" }}
    """
    found = manifests.read_all(app(tmp_path, {"pylock.toml": pylock, "pylock.dev.toml": dev}))
    assert found.files == ["pylock.toml", "pylock.dev.toml"]
    assert facts(found) == [
        (
            "pylock.toml:11",
            "first",
            "ssh://git@github.com/acme/first.git",
            "v1.0",
            SHA_A,
            "src/first",
        ),
        ("pylock.dev.toml:5", "tool", "https://gitlab.com/team/tool.git", None, SHA_B, None),
    ]


def test_setup_cfg(tmp_path: Path) -> None:
    setup_cfg = """\
        [metadata]
        name = app

        [options]
        packages = find:
        install_requires =
            requests>=2
            # private-old @ git+ssh://git@github.com/acme/old.git
            private @ git+ssh://git@github.com/acme/private.git@v1.0#subdirectory=py ; os_name>"a"

        [options.extras_require]
        web = webkit @ git+https://github.com/acme/webkit.git@main
    """
    found = manifests.read_all(app(tmp_path, {"setup.cfg": setup_cfg}))
    assert facts(found) == [
        ("setup.cfg:9", "private", "ssh://git@github.com/acme/private.git", "v1.0", None, "py"),
        ("setup.cfg:12", "webkit", "https://github.com/acme/webkit.git", "main", None, None),
    ]


def test_colon_after_ssh_host_is_reported_with_the_fix(tmp_path: Path) -> None:
    pyproject = """\
        [tool.poetry.dependencies]
        x = { git = "ssh://git@github.com:acme/x.git", tag = "v1" }
        y = { git = "git+ssh://git@github.com:acme/y.git" }
    """
    found = manifests.read_all(app(tmp_path, {"pyproject.toml": pyproject}))
    assert found.git == []
    assert [(p.slug, p.facts["line"], p.facts["fixed"]) for p in found.problems] == [
        ("requirements::scp-url", 2, "ssh://git@github.com/acme/x.git"),
        ("requirements::scp-url", 3, "ssh://git@github.com/acme/y.git"),
    ]


def test_an_ssh_option_as_user_name_is_reported(tmp_path: Path) -> None:
    pyproject = """\
        [tool.poetry.dependencies]
        x = { git = "ssh://-oProxyCommand=x@github.com/acme/x.git", tag = "v1" }
        y = { git = "-oProxyCommand@github.com:acme/y.git" }
        z = { git = "ssh://git@github.com/acme/z.git" }
    """
    found = manifests.read_all(app(tmp_path, {"pyproject.toml": pyproject}))
    assert [req.repo for req in found.git] == ["acme/z"]
    assert [(p.slug, p.facts["line"], p.facts["fixed"]) for p in found.problems] == [
        ("requirements::ssh-user", 2, "ssh://git@github.com/acme/x.git"),
        ("requirements::ssh-user", 3, "ssh://git@github.com/acme/y.git"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "title"),
    [
        (
            "pyproject.toml",
            "[project\n",
            "Cannot read pyproject.toml: Expected ']' at the end of a table declaration "
            "(at line 1, column 9)",
        ),
        (
            "uv.lock",
            "version = 1\nversion = 2\n",
            "Cannot read uv.lock: Cannot overwrite a value (at line 2, column 12)",
        ),
        (
            "Pipfile.lock",
            '{"default": {,}}',
            "Cannot read Pipfile.lock: Expecting property name enclosed in double quotes: "
            "line 1 column 14 (char 13)",
        ),
        (
            "setup.cfg",
            "install_requires = x\n",
            "Cannot read setup.cfg: File contains no section headers.\nfile: 'setup.cfg', line: 1\n"
            "'install_requires = x\\n'",
        ),
    ],
)
def test_a_file_that_does_not_parse(tmp_path: Path, name: str, text: str, title: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError) as raised:
        manifests.read_all(tmp_path)
    assert raised.value.slug == "manifests::invalid"
    assert raised.value.title == title
    assert raised.value.why.startswith(f"deploykey reads {name} to find the private git")


def test_toml_without_a_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10 without tomli (nor pip's vendored copy) cannot read TOML: say so."""
    real = base.importlib.import_module

    def missing(name: str) -> object:
        if name in ("tomllib", "tomli", "pip._vendor.tomli"):
            raise ModuleNotFoundError(name)
        return real(name)

    monkeypatch.setattr(base.importlib, "import_module", missing)
    (tmp_path / "uv.lock").write_text(UV_LOCK)
    with pytest.raises(UserError) as raised:
        manifests.read_all(tmp_path)
    version = ".".join(map(str, sys.version_info[:3]))
    assert raised.value.title == (
        "Cannot read uv.lock: reading TOML needs Python 3.11 or newer, or tomli; "
        f"this is Python {version}"
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (("uv.lock", "pyproject.toml"), ("uv", "uv.lock")),
        (("poetry.lock", "pyproject.toml"), ("poetry", "poetry.lock")),
        (("Pipfile.lock", "Pipfile"), ("pipenv", "Pipfile.lock")),
        (("Pipfile",), ("pipenv", "Pipfile")),
        (("requirements.txt", "setup.py"), ("pip", "requirements.txt")),
        (("requirements-dev.txt", "setup.py"), ("pip", "requirements.txt")),
    ],
)
def test_installer_for(tmp_path: Path, files: tuple[str, ...], expected: tuple[str, str]) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    assert manifests.installer_for(tmp_path) == expected


def test_several_package_manager_files_are_refused(tmp_path: Path) -> None:
    for name in ("uv.lock", "requirements.txt", "Pipfile.lock", "Pipfile"):
        (tmp_path / name).write_text("")
    with pytest.raises(UserError) as raised:
        manifests.installer_for(tmp_path)
    assert raised.value.slug == "manifests::ambiguous"
    assert raised.value.title == (
        "Multiple Python package manager files were found: "
        "Pipfile.lock (Pipenv), requirements.txt (pip), uv.lock (uv)"
    )
    (tmp_path / "Pipfile.lock").unlink()
    (tmp_path / "uv.lock").unlink()
    with pytest.raises(UserError, match=r"found: Pipfile \(Pipenv\), requirements.txt \(pip\)$"):
        manifests.installer_for(tmp_path)


def test_every_reader_is_registered_with_its_names() -> None:
    assert {name: reader.NAMES for name, reader in manifests.READERS.items()} == {
        "requirements_txt": (
            "requirements*.txt",
            "requirements/*.txt",
            "requirements/*.in",
            "requirements*.in",
        ),
        "setup_cfg": ("setup.cfg",),
        "pyproject": ("pyproject.toml",),
        "pipfile": ("Pipfile", "Pipfile.lock"),
        "pylock": ("pylock.toml", "pylock.*.toml"),
        "poetry_lock": ("poetry.lock",),
        "uv_lock": ("uv.lock",),
    }
    for name, reader in manifests.READERS.items():
        assert reader.__name__ == f"deploykey.manifests.{name}"  # type: ignore[attr-defined]


def _uv() -> list[str]:
    """The pinned uv the installer tests use (tests/support/installers.py), not whatever is on PATH."""
    return [str(installers.pinned("uv"))]


def _git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_uv_lock_written_by_uv(tmp_path: Path) -> None:
    """The real `uv lock` on a project whose dependency is an ssh URL; git's `insteadOf` sends
    the fetch to a bare repository in tmp_path, so the lockfile names the ssh URL as in a build."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.test",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.test",
    }
    remote = "ssh://git@git.example.test/acme/lib.git"
    bare, work = tmp_path / "lib.git", tmp_path / "work"
    _git("init", "-q", "--bare", str(bare), cwd=tmp_path, env=env)
    app(
        work,
        {
            "pyproject.toml": """\
            [project]
            name = "private-lib"
            version = "1.0"
        """,
            "sub/pyproject.toml": """\
            [project]
            name = "sub-lib"
            version = "2.0"
        """,
        },
    )
    _git("init", "-q", cwd=work, env=env)
    _git("add", "-A", cwd=work, env=env)
    _git("commit", "-qm", "one", cwd=work, env=env)
    _git("tag", "v1.0", cwd=work, env=env)
    _git("push", "-q", str(bare), "HEAD:refs/heads/main", "v1.0", cwd=work, env=env)
    commit = _git("rev-parse", "HEAD", cwd=work, env=env)
    project = app(
        tmp_path / "app",
        {
            "pyproject.toml": f"""\
            [project]
            name = "app"
            version = "0.1"
            requires-python = ">=3.10"
            dependencies = ["private-lib", "sub-lib"]
            [tool.uv.sources]
            private-lib = {{ git = "{remote}", tag = "v1.0" }}
            sub-lib = {{ git = "{remote}", branch = "main", subdirectory = "sub" }}
        """
        },
    )
    env |= {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.{bare.as_uri()}.insteadOf",
        "GIT_CONFIG_VALUE_0": remote,
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_CONFIG": "1",
    }
    done = subprocess.run(
        [*_uv(), "lock", "--offline"], cwd=project, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    found = manifests.read_all(project)
    assert found.files == ["pyproject.toml", "uv.lock"]
    assert [(r.file, r.name, r.remote, r.ref, r.commit, r.subdirectory) for r in found.git] == [
        ("uv.lock", "private-lib", remote, "v1.0", commit, None),
        ("uv.lock", "sub-lib", remote, "main", commit, "sub"),
    ]
    lock = (project / "uv.lock").read_text().splitlines()
    assert all(commit in lock[req.line - 1] for req in found.git)
