"""uv or pip, and the installer's cache in the build cache: cold, warm, and a dependency's new tag."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import (
    FLIT,
    KIT_PINS,
    LOCK_TAG,
    Build,
    GeneratedKey,
    download_wheels,
    files_with_key,
    flit_package,
    key_dirs,
    text_has_key,
)
from deploykey.core.errors import UserError
from deploykey.installers import installer
from support.gitserver import GitServer

# For the system python3 (what a build image has): the kit's own dependencies, flit_core, uv.
WHEELS = (*(pin for pin in KIT_PINS if not pin.startswith("ahocorasick-rs")), "uv", FLIT)


@pytest.fixture(scope="session")
def wheels() -> Path:
    """A world-readable wheelhouse, so that the builds below need no package index."""
    directory = Path(f"/tmp/deploykey-tests-wheels-{LOCK_TAG}")
    if not any(directory.glob("uv-*.whl")):
        directory.mkdir(exist_ok=True)
        download_wheels(directory, *WHEELS, cp311=True)
    directory.chmod(0o755)
    return directory


def system_build_env(build: Build, wheels: Path) -> dict[str, str]:
    """A build image's environment: the system python3 (none of the kit's dependencies), no uv."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(build.home),
        "LANG": "C.UTF-8",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "DEPLOYKEY_APP_PATH": str(build.app_path),
    }
    assert (
        subprocess.run(["/usr/bin/python3", "-c", "import sh"], capture_output=True).returncode != 0
    )
    return env


def fetches(server: GitServer, key: GeneratedKey, repo: str) -> int:
    return sum(1 for line in server.log() if line == f"{key.label} {repo} granted")


def test_uv_cold_warm_and_a_new_tag(
    build: Build, utils_key: GeneratedKey, git_server: GitServer, wheels: Path
) -> None:
    before = key_dirs()
    git_server.add_repo("acme/tagged", flit_package("tagged", "1.0"))
    git_server.grant(utils_key.label, utils_key.public, ["acme/tagged"])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "tagged @ git+ssh://git@github.com/acme/tagged.git@v1.0\n"
    )
    env = system_build_env(build, wheels)
    app_files = {p.name: p.read_bytes() for p in build.app.iterdir() if p.is_file()}

    def fresh_checkout() -> None:
        """Every Heroku build starts from the app's source; only CACHE_DIR is kept."""
        subprocess.run(["rm", "-rf", str(build.app)], check=True)
        build.app.mkdir()
        for name, data in app_files.items():
            (build.app / name).write_bytes(data)

    # Cold: the kit's dependencies and uv are installed into the build cache, the package fetched.
    cold = build.compile(env=env)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    cache = build.cache / "deploykey"
    assert "Installing deploykey's dependencies" in cold.stdout
    assert f"installing uv into {cache / 'uv'}" in cold.stdout
    assert "with uv" in cold.stdout and " + tagged==1.0" in cold.stdout
    # The mirror's partial clone, then its files by id (mirrors.Fetcher._fill), nothing else.
    assert fetches(git_server, utils_key, "acme/tagged") == 2
    ran = build.run_app("import tagged; print(tagged.__version__)")
    assert ran.stdout.strip() == "1.0", ran.stderr

    # Warm: nothing installed but the package from the cache; the tag is in the mirror: no network.
    fresh_checkout()
    subprocess.run(["rm", "-rf", str(build.app_path)], check=True)
    counted = fetches(git_server, utils_key, "acme/tagged")
    warm = build.compile(env=env)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "Installing deploykey's dependencies" not in warm.stdout
    assert "installing uv" not in warm.stdout
    assert " + tagged==1.0" in warm.stdout
    assert "v1.0 is " in warm.stdout and "(in the mirror, no network)" in warm.stdout
    assert fetches(git_server, utils_key, "acme/tagged") == counted
    # uv linked the package's files from its cache (one filesystem here): no bytes copied, and
    # the check read each such file once, under one of its names.
    [installed] = build.app.glob(".venv/lib/python*/site-packages/tagged/__init__.py")
    assert os.lstat(installed).st_nlink > 1
    assert "other names (hard links) of files read above" in warm.stdout

    # A new tag: fetched once, the rest from the cache.
    git_server.add_commit(
        "acme/tagged",
        {
            "tagged/__init__.py": '"""tagged"""\n\n__version__ = "1.1"\n',
            "pyproject.toml": flit_package("tagged", "1.1")["pyproject.toml"],
        },
        "v1.1",
    )
    app_files["requirements.txt"] = b"tagged @ git+ssh://git@github.com/acme/tagged.git@v1.1\n"
    fresh_checkout()
    subprocess.run(["rm", "-rf", str(build.app_path)], check=True)
    retagged = build.compile(env=env)
    assert retagged.returncode == 0, retagged.stdout + retagged.stderr
    assert " + tagged==1.1" in retagged.stdout
    # One incremental fetch, then the new commit's files by id.
    assert fetches(git_server, utils_key, "acme/tagged") == counted + 2
    ran = build.run_app("import tagged; print(tagged.__version__)")
    assert ran.stdout.strip() == "1.1", ran.stderr

    # Again on the same build dir (a second local run of bin/compile): the venv there is updated.
    subprocess.run(["rm", "-rf", str(build.app_path)], check=True)
    again = build.compile(env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    ran = build.run_app("import tagged; print(tagged.__version__)")
    assert ran.stdout.strip() == "1.1", ran.stderr

    # The cache keeps no key: the build's own scan covered it, and so does this test's search.
    for result in (cold, warm, retagged, again):
        assert (
            f"in {build.app}, {build.cache} for" in result.stdout
            and "no key material found" in result.stdout
        )
        assert not text_has_key(result.stdout + result.stderr, utils_key.text)
    assert list((cache / "uv-cache").iterdir())
    assert files_with_key([build.app, build.cache], utils_key.text) == []
    assert key_dirs() - before == set()


def test_many_git_dependencies_at_once_stay_within_the_servers_limits(
    build: Build, utils_key: GeneratedKey, git_server: GitServer, wheels: Path
) -> None:
    """uv fetches every git dependency at once; an OpenSSH server with its default MaxStartups
    (10:30:100, as the test server has) drops connections beyond 10 still authenticating. The
    router holds at most 8 open, so 16 dependencies all install."""
    names = [f"many{i}" for i in range(16)]
    for name in names:
        git_server.add_repo(f"acme/{name}", flit_package(name, "1.0"))
    git_server.grant(utils_key.label, utils_key.public, [f"acme/{name}" for name in names])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        "".join(f"{name} @ git+ssh://git@github.com/acme/{name}.git@v1.0\n" for name in names)
    )
    sshd_log = git_server.root / "sshd.log"
    dropped_before = sshd_log.read_text().count("MaxStartups")
    result = build.compile(env=build.environ(DEPLOYKEY_INSTALLER="uv", PIP_FIND_LINKS=str(wheels)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "with uv" in result.stdout
    assert all(f" + {name}==1.0" in result.stdout for name in names), result.stdout
    assert sshd_log.read_text().count("MaxStartups") == dropped_before
    assert files_with_key([build.app, build.cache], utils_key.text) == []


def test_choosing_the_installer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(installer.shutil, "which", lambda _name: None)
    cached = tmp_path / "uv" / "bin" / "uv"
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)
    assert installer.choose("auto", tmp_path).uv == cached
    assert installer.choose("pip", tmp_path).name == "pip"
    assert installer.choose("auto", tmp_path, editable_vcs=["requirements.txt:3"]).name == "pip"
    assert installer.choose("uv", tmp_path, user=True).name == "pip"
    env = installer.choose("auto", tmp_path).env(
        {"PIP_FIND_LINKS": "/w", "PIP_NO_INDEX": "1", "UV_INDEX_URL": "x"}
    )
    assert env["UV_FIND_LINKS"] == "/w" and env["UV_INDEX_URL"] == "x"
    argv = installer.choose("auto", tmp_path).install_argv(Path("py"), Path("r"), None, env=env)
    assert "--no-index" in argv  # uv has no variable for it
    assert (
        env["UV_CACHE_DIR"] == str(tmp_path / "uv-cache") and env["UV_NO_GITHUB_FAST_PATH"] == "1"
    )


@pytest.mark.parametrize(
    ("files", "manager", "installed"),
    [
        (("requirements.txt", "pyproject.toml"), "pip", "requirements.txt"),
        (("uv.lock", "pyproject.toml"), "uv", "uv.lock"),
        (("poetry.lock", "pyproject.toml"), "poetry", "poetry.lock"),
        (("Pipfile", "Pipfile.lock"), "pipenv", "Pipfile.lock"),
        (("pyproject.toml",), "pip", "requirements.txt"),  # reported as missing by build.plan
    ],
)
def test_the_app_files_decide(
    tmp_path: Path, files: tuple[str, ...], manager: str, installed: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    choice = installer.decide(tmp_path, tmp_path / "requirements.txt", None)
    assert (choice.manager, choice.file) == (manager, tmp_path / installed)
    assert choice.locked == (manager != "pip")


def test_a_given_requirements_file_wins_and_a_lone_pipfile_is_refused(tmp_path: Path) -> None:
    for name in ("uv.lock", "requirements.txt", "Pipfile"):
        (tmp_path / name).write_text("")
    given = installer.decide(tmp_path, tmp_path / "deps.txt", "-r deps.txt")
    assert (given.manager, given.file, given.reason) == (
        "pip",
        tmp_path / "deps.txt",
        "-r deps.txt names it",
    )
    with pytest.raises(UserError) as ambiguous:
        installer.decide(tmp_path, tmp_path / "requirements.txt", None)
    assert ambiguous.value.slug == "manifests::ambiguous"
    (tmp_path / "uv.lock").unlink()
    (tmp_path / "requirements.txt").unlink()
    with pytest.raises(UserError) as lone:
        installer.decide(tmp_path, tmp_path / "requirements.txt", None)
    assert lone.value.slug == "install::lock-missing"
    assert lone.value.title == "The app has a Pipfile but no Pipfile.lock"
