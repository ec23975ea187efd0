"""A build image's system python3 without the kit's dependencies: they are installed outside the app."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import KIT, snapshot
from githubapi import make_app_key

SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_dependencies_bootstrapped_into_a_private_temp_dir(tmp_path: Path) -> None:
    missing = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import sh, dotenv"], capture_output=True
    )
    if missing.returncode == 0:
        pytest.fail(
            "/usr/bin/python3 already has sh and dotenv: this test needs a Python without them"
        )
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("flask\n")
    env_file = tmp_path / "local.env"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    env_file.write_text("DEPLOY_KEY='" + (tmp_path / "k").read_text() + "'\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    state = snapshot(app)
    result = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-I",
            str(KIT / "lib" / "deploykey"),
            "compile",
            str(app),
            str(tmp_path / "cache"),
            str(env_file),
            "--dry-run",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Installing deploykey's dependencies" in result.stdout
    installed = next(temp.glob("deploykey-deps-*/py3*"))
    assert (installed / "sh.py").exists() or (installed / "sh").exists()
    assert (installed / "ahocorasick_rs").is_dir()  # the scan's fast search, from a wheel
    assert oct(installed.parent.stat().st_mode & 0o777) == "0o700"
    assert snapshot(app) == state


def test_without_a_wheel_of_the_fast_search_the_scan_uses_python(tmp_path: Path) -> None:
    """A platform with no ahocorasick-rs wheel (musl, say; here: an index that lacks it): the kit
    installs the rest, says the scan will be slower, scans correctly, and does not ask pip again."""
    from deploykey.bootstrap import REQUIREMENTS

    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            str(wheels),
            *REQUIREMENTS.values(),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "leak.json").write_text('{"key": ' + repr((tmp_path / "k").read_text()) + "}")
    (tree / "clean.txt").write_text("nothing\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(temp),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
    }
    scan = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "scan", str(tree)]
    scan += ["--key-file", str(tmp_path / "k")]
    runs = [subprocess.run(scan, env=env, capture_output=True, text=True) for _ in range(2)]
    for result in runs:
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{tree / 'leak.json'} (private key text, " in result.stderr
        assert "(1 process, Python)" in result.stdout
        assert "the scan searched with Python alone" in result.stdout
    first, second = (result.stdout + result.stderr for result in runs)
    assert "could not install ahocorasick-rs, the leak check's fast search" in first
    assert "Installing deploykey's dependencies" in first
    assert "Installing" not in second and "could not install" not in second
    installed = next(temp.glob("deploykey-deps-*/py3*"))
    assert (installed / "no-wheel-for-ahocorasick-rs").exists()


def test_an_unreachable_index_is_named_as_the_cause(tmp_path: Path) -> None:
    """pip runs but cannot reach the index (here a proxy nobody listens on): the error says so,
    and blames neither ahocorasick-rs nor a missing pip."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "requirements.txt").write_text("flask\n")
    result = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "doctor", str(app)],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path / "home"),
            "TMPDIR": str(tmp_path),
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9",
            "PIP_RETRIES": "1",  # pip names the cause only when it retries
            "PIP_TIMEOUT": "3",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert " !     Could not reach the package index for deploykey's own dependencies" in err
    assert "ProxyError" in err or "Max retries exceeded" in err
    assert "ahocorasick-rs" not in err.split("Could not reach")[0]
    assert "Make pip available" not in err
    assert "(deps::unreachable: README.md#deps-unreachable)" in err
    assert not list(tmp_path.glob("deploykey-deps-*/py3*"))  # nothing half-installed


@pytest.mark.parametrize("key", ["deploy key", "GitHub App"])
@pytest.mark.parametrize("command", ["compile", "install"])
def test_dependencies_in_the_build_cache_are_sealed_with_the_key(
    tmp_path: Path, command: str, key: str
) -> None:
    """bin/compile keeps the kit's dependencies in CACHE_DIR, `install --cache-dir` on the Docker
    cache mount; build code can write both. The next build imports them only if they still carry
    the seal made with the build's key (a deploy key, or a GitHub App's private key when that is
    the build's only key): code planted there never runs in the process that reads the keys."""
    missing = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import sh, dotenv"], capture_output=True
    )
    if missing.returncode == 0:
        pytest.fail("/usr/bin/python3 already has sh and dotenv: this test needs one without")
    app, cache, env_dir = tmp_path / "app", tmp_path / "cache", tmp_path / "env"
    for directory in (app, cache, env_dir):
        directory.mkdir()
    (app / "requirements.txt").write_text("# none\n")
    if key == "GitHub App":  # no git requirement: the App is never asked for a token
        make_app_key(env_dir / "GITHUB_APP_PRIVATE_KEY")
        (env_dir / "GITHUB_APP_ID").write_text("424242")
    else:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
        )
        (env_dir / "DEPLOY_KEY").write_text((tmp_path / "k").read_text())
    argv = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), command]
    if command == "compile":
        # A real build (a dry run keeps nothing: test_a_dry_run_keeps_nothing_in_the_cache)
        argv += [str(app), str(cache), str(env_dir)]
        deps_root = cache / "deploykey" / "deps"
    else:  # the Dockerfile's RUN line, with --env-dir for /run/secrets
        argv += ["--cache-dir", str(cache), "--env-dir", str(env_dir)]
        argv += ["--target", str(tmp_path / "target")]
        deps_root = cache / "deps"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path)}
    env["DEPLOYKEY_APP_PATH"] = str(tmp_path / "run-time-app")  # not the machine's /app

    def compile_() -> subprocess.CompletedProcess[str]:
        shutil.rmtree(app / ".venv", ignore_errors=True)  # each build has a build dir of its own
        return subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=300)

    first = compile_()
    assert first.returncode == 0, first.stdout + first.stderr
    deps = next(deps_root.glob("py3*"))
    assert (deps / ".deploykey-seal").is_file()
    second = compile_()  # sealed: imported as it is
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Installing deploykey's dependencies" not in second.stdout
    # Build code plants code in a dependency: it must never run.
    ran = tmp_path / "planted-ran"
    planted = next(deps.glob("dotenv/__init__.py"))
    planted.write_text(f"open({str(ran)!r}, 'w').close()\n" + planted.read_text())
    third = compile_()
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"{deps} is not as deploykey left it: not imported; installing again" in third.stderr
    assert "Installing deploykey's dependencies" in third.stdout
    assert not ran.exists()
    assert "planted" not in next(deps.glob("dotenv/__init__.py")).read_text()


@pytest.mark.parametrize("how", ["--dry-run", "DEPLOYKEY_DRY_RUN"])
def test_a_dry_run_keeps_nothing_in_the_cache(tmp_path: Path, how: str) -> None:
    """`bin/compile --dry-run` with a python3 that lacks the kit's dependencies: they are installed
    into a temp dir removed at exit, never into CACHE_DIR (it wrote some hundred files there);
    once a real build has sealed them in the cache, a dry run imports them from there as they are."""
    missing = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import sh, dotenv"], capture_output=True
    )
    if missing.returncode == 0:
        pytest.fail("/usr/bin/python3 already has sh and dotenv: this test needs one without")
    app, cache, env_dir, temp = (tmp_path / name for name in ("app", "cache", "env", "tmp"))
    for directory in (app, cache, env_dir, temp):
        directory.mkdir()
    (app / "requirements.txt").write_text("# none\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    (env_dir / "DEPLOY_KEY").write_text((tmp_path / "k").read_text())
    argv = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "compile"]
    argv += [str(app), str(cache), str(env_dir)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(temp)}
    env["DEPLOYKEY_APP_PATH"] = str(tmp_path / "run-time-app")  # not the machine's /app

    def compile_(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, *extra], cwd=app, env=env, capture_output=True, text=True, timeout=300
        )

    if how == "DEPLOYKEY_DRY_RUN":  # a config var, as on Heroku: `heroku config:set`
        (env_dir / "DEPLOYKEY_DRY_RUN").write_text("1")
    state = snapshot(app, cache)
    dry = compile_("--dry-run") if how == "--dry-run" else compile_()
    assert "(dry run)" in dry.stdout
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Installing deploykey's dependencies" in dry.stdout
    assert f"into {temp / 'deploykey-deps-dry-run-'}" in dry.stdout
    assert snapshot(app, cache) == state
    assert list(temp.iterdir()) == []
    (env_dir / "DEPLOYKEY_DRY_RUN").unlink(missing_ok=True)
    real = compile_()
    assert real.returncode == 0, real.stdout + real.stderr
    deps = next((cache / "deploykey" / "deps").glob("py3*"))
    assert (deps / ".deploykey-seal").is_file()
    state = snapshot(app, cache)
    again = compile_("--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing deploykey's dependencies" not in again.stdout
    assert snapshot(app, cache) == state
    assert list(temp.iterdir()) == []
