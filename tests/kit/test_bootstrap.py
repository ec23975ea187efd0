"""A build image's system python3 without the kit's dependencies: they are installed outside the
app, as the wheels deps.lock pins, and each run imports only what it has checked against the lock."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from conftest import KIT, snapshot
from deploykey.kit.bootstrap import OPTIONAL, REQUIREMENTS, SECRET_NAME, pins, seal_key

SYSTEM_PYTHON = Path("/usr/bin/python3")
PINNED = {digest for pin in pins().values() for digest in pin.hashes}


def without_the_kits_dependencies() -> None:
    missing = subprocess.run(
        [str(SYSTEM_PYTHON), "-I", "-c", "import sh, dotenv"], capture_output=True
    )
    if missing.returncode == 0:
        pytest.fail("/usr/bin/python3 already has sh and dotenv: this test needs one without")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plant(deps: Path, ran: Path) -> None:
    """What build code that can write a deps dir does there: code that leaves `ran` added to each
    module, and to each module inside each wheel, and a module that shadows `sh` beside them."""
    code = f"open({str(ran)!r}, 'a').close()\n"
    for module in deps.rglob("*.py"):
        module.write_text(code + module.read_text())
    for wheel in deps.glob("*.whl"):
        with zipfile.ZipFile(wheel) as original:
            members = {info.filename: original.read(info) for info in original.infolist()}
        with zipfile.ZipFile(wheel, "w") as changed:
            for name, data in members.items():
                changed.writestr(name, code.encode() + data if name.endswith(".py") else data)
    if not (deps / "sh").exists() and not (deps / "sh.py").exists():
        (deps / "sh.py").write_text(code)


def system_env(tmp_path: Path, temp: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(temp), **extra}


def scan(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`deploykey scan` of a small tree with the system python3: a command that keeps the kit's
    dependencies in the temp dir."""
    tree, key = tmp_path / "tree", tmp_path / "k"
    if not key.exists():
        tree.mkdir()
        (tree / "app.py").write_text("print(1)\n")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    argv = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "scan", str(tree)]
    argv += ["--key-file", str(key)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def pinned_wheels(directory: Path, *names: str) -> None:
    """The wheels deps.lock pins for `names` (distributions), for the system python3."""
    lock = directory.parent / f"{directory.name}.lock"
    lock.write_text(
        "".join(
            f"{pins()[name].requirement} "
            + " ".join(f"--hash=sha256:{digest}" for digest in pins()[name].hashes)
            + "\n"
            for name in names
        )
    )
    subprocess.run(
        [str(SYSTEM_PYTHON), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        + ["--require-hashes", "-d", str(directory), "-r", str(lock)],
        check=True,
        capture_output=True,
    )


def test_the_lock_pins_each_dependency_within_pyproject_s_range() -> None:
    """deps.lock (written by .ci/deps_lock.py) pins exactly the kit's dependencies, each to one
    version pyproject.toml allows, with at least one wheel's sha256."""
    project = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(line).name: Requirement(line) for line in project["dependencies"]}
    assert set(pins()) == set(ranges) == {*REQUIREMENTS.values(), *OPTIONAL.values()}
    for name, pin in pins().items():
        assert ranges[name].specifier.contains(pin.version), pin
        assert pin.hashes and all(len(digest) == 64 for digest in pin.hashes), pin


def test_the_zipapp_reads_the_lock(tmp_path: Path) -> None:
    """deploykey.pyz (app hooks, the scan buildpack) carries deps.lock and reads it from the zip."""
    pyz = tmp_path / "deploykey.pyz"
    subprocess.run([str(KIT / "bin" / "deploykey"), "pyz", str(pyz)], check=True)
    read = subprocess.run(
        [
            str(SYSTEM_PYTHON),
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from deploykey.kit import bootstrap; print(bootstrap.pins()['sh'].requirement)",
            str(pyz),
        ],
        capture_output=True,
        text=True,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout == pins()["sh"].requirement + "\n"


def test_dependencies_bootstrapped_into_a_private_temp_dir(tmp_path: Path) -> None:
    """The first run downloads the pinned wheels (pip checks each hash) into a private dir in the
    temp dir, and imports them from a directory of its own, which is gone when it exits."""
    without_the_kits_dependencies()
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
    wheels = sorted(path.name.split("-")[0] for path in installed.iterdir())
    assert wheels == ["ahocorasick_rs", "python_dotenv", "pyyaml", "sh"]  # the fast search too
    assert all(sha256(path) in PINNED for path in installed.iterdir())
    assert oct(installed.parent.stat().st_mode & 0o777) == "0o700"
    assert [path.name for path in temp.iterdir()] == [installed.parent.name]  # imported: gone
    assert snapshot(app) == state


def test_without_a_wheel_of_the_fast_search_the_scan_uses_python(tmp_path: Path) -> None:
    """A platform with no ahocorasick-rs wheel (musl, say; here: an index that lacks it): the kit
    installs the rest, says the scan will be slower, scans correctly, and does not ask pip again."""
    wheels = tmp_path / "wheels"
    pinned_wheels(wheels, *REQUIREMENTS.values())
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
    argv = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "scan", str(tree)]
    argv += ["--key-file", str(tmp_path / "k")]
    runs = [subprocess.run(argv, env=env, capture_output=True, text=True) for _ in range(2)]
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


def test_code_planted_in_the_temp_deps_dir_never_runs(tmp_path: Path) -> None:
    """Outside a build cache (here `deploykey scan`), the kit keeps its dependencies in a private
    dir in the temp dir, which build code running later as the same user can write, and a later
    build on that machine (a CI runner, a local dry run) runs with a new key. Whatever is planted
    there (a changed module, a changed wheel, a module that shadows one), it never runs: each
    wheel that deps.lock does not pin is removed and downloaded again."""
    without_the_kits_dependencies()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = system_env(tmp_path, temp)
    first = scan(tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    deps = next(temp.glob("deploykey-deps-*/py3*"))
    ran = tmp_path / "planted-ran"
    plant(deps, ran)
    second = scan(tmp_path, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not ran.exists()
    for wheel in ("ahocorasick_rs", "python_dotenv", "pyyaml", "sh"):
        (path,) = deps.glob(f"{wheel}-*.whl")
        assert f"{path} is not a file deps.lock pins: not imported; removed" in second.stderr
        assert sha256(path) in PINNED  # downloaded again
    assert "Installing deploykey's dependencies" in second.stdout
    assert not (deps / "sh.py").exists()
    third = scan(tmp_path, env)
    assert third.returncode == 0 and "Installing" not in third.stdout, third.stdout + third.stderr
    assert not ran.exists()


def test_a_wheel_the_index_serves_unpinned_is_refused(tmp_path: Path) -> None:
    """The index (a mirror, a proxy on the way, here a wheelhouse) serves a wheel of the pinned
    version whose bytes are not what PyPI published: pip refuses it, deploykey says which file,
    and nothing is installed or run."""
    without_the_kits_dependencies()
    wheels, temp = tmp_path / "wheels", tmp_path / "tmp"
    temp.mkdir()
    pinned_wheels(wheels, *REQUIREMENTS.values(), *OPTIONAL.values())
    ran = tmp_path / "planted-ran"
    (dotenv,) = wheels.glob("python_dotenv-*.whl")
    changed = wheels / "changed"
    changed.mkdir()
    shutil.move(dotenv, changed)
    plant(changed, ran)
    shutil.move(changed / dotenv.name, dotenv)
    env = system_env(tmp_path, temp, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    result = scan(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert f" !     file://{dotenv} is not a file deploykey pinned for its own dependencies" in err
    assert f"pip got a file whose sha256 is {sha256(dotenv)}, which deps.lock does not" in err
    assert "(deps::tampered: README.md#deps-tampered)" in err
    assert not ran.exists()
    assert not list(temp.glob("deploykey-deps-*/py3*"))


def test_deploykey_deps_dir_holding_an_unpinned_wheel_is_refused(tmp_path: Path) -> None:
    """DEPLOYKEY_DEPS_DIR is yours: the wheels there are checked like the kit's own, and one that
    deps.lock does not pin is named and left there, not deleted; nothing from it runs."""
    without_the_kits_dependencies()
    deps, temp = tmp_path / "deps", tmp_path / "tmp"
    temp.mkdir()
    pinned_wheels(deps, *REQUIREMENTS.values(), *OPTIONAL.values())
    env = system_env(tmp_path, temp, DEPLOYKEY_DEPS_DIR=str(deps))
    fine = scan(tmp_path, env)
    assert fine.returncode == 0 and "Installing" not in fine.stdout, fine.stdout + fine.stderr
    ran = tmp_path / "planted-ran"
    plant(deps, ran)
    (deps / "sh.py").unlink()
    result = scan(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    (first, *_) = sorted(deps.glob("*.whl"))
    assert (
        f" !     {first} is not a file deploykey pinned for its own dependencies" in result.stderr
    )
    assert f"its sha256 is {sha256(first)}, which deps.lock does not list" in result.stderr
    assert not ran.exists()
    assert sha256(first) not in PINNED  # still there, as it was


@pytest.mark.parametrize("command", ["compile", "install", "install --fetched"])
def test_code_planted_in_the_build_cache_never_runs(tmp_path: Path, command: str) -> None:
    """bin/compile keeps the kit's dependencies in CACHE_DIR, `fetch` and `install --cache-dir`
    on the Docker cache mount; build code can write both. Each run imports only wheels that
    deps.lock pins: code planted there never runs, neither in the process that reads the keys
    nor in `install --fetched`, which has none (and used to import the cache's copy unchecked)."""
    without_the_kits_dependencies()
    app, cache, env_dir = tmp_path / "app", tmp_path / "cache", tmp_path / "env"
    for directory in (app, cache, env_dir):
        directory.mkdir()
    (app / "requirements.txt").write_text("# none\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    (env_dir / "DEPLOY_KEY").write_text((tmp_path / "k").read_text())
    kit = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey")]
    target = ["--target", str(tmp_path / "target")]
    if command == "compile":
        # A real build (a dry run keeps nothing: test_a_dry_run_keeps_nothing_in_the_cache)
        first = later = [*kit, "compile", str(app), str(cache), str(env_dir)]
        deps_root = cache / "deploykey" / "deps"
    elif command == "install":  # the Dockerfile's RUN line, with --env-dir for /run/secrets
        first = later = [*kit, "install", "--cache-dir", str(cache), "--env-dir", str(env_dir)]
        first = later = first + target
        deps_root = cache / "deps"
    else:  # the two-step Dockerfile: fetch with the secret, then install with none
        first = [*kit, "fetch", "--cache-dir", str(cache), "--env-dir", str(env_dir)]
        later = [*kit, "install", "--fetched", "--cache-dir", str(cache), *target]
        deps_root = cache / "deps"
    env = system_env(tmp_path, tmp_path, DEPLOYKEY_APP_PATH=str(tmp_path / "run-time-app"))

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        shutil.rmtree(app / ".venv", ignore_errors=True)  # each build has a build dir of its own
        return subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=300)

    installed = run(first)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    deps = next(deps_root.glob("py3*"))
    assert all(sha256(path) in PINNED for path in deps.iterdir())
    again = run(later)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing deploykey's dependencies" not in again.stdout
    ran = tmp_path / "planted-ran"
    plant(deps, ran)
    planted = run(later)
    assert planted.returncode == 0, planted.stdout + planted.stderr
    assert not ran.exists()
    (sh,) = deps.glob("sh-*.whl")
    assert f"{sh} is not a file deps.lock pins: not imported; removed" in planted.stderr
    assert "Installing deploykey's dependencies" in planted.stdout
    assert all(sha256(path) in PINNED for path in deps.iterdir())


@pytest.mark.parametrize("how", ["--dry-run", "DEPLOYKEY_DRY_RUN"])
def test_a_dry_run_keeps_nothing_in_the_cache(tmp_path: Path, how: str) -> None:
    """`bin/compile --dry-run` with a python3 that lacks the kit's dependencies: they are installed
    into a temp dir removed at exit, never into CACHE_DIR (it wrote some hundred files there);
    once a real build has kept them in the cache, a dry run imports them from there, checked, and
    one that does not match deps.lock is neither imported nor removed."""
    without_the_kits_dependencies()
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
    state = snapshot(app, cache)
    again = compile_("--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Installing deploykey's dependencies" not in again.stdout
    assert snapshot(app, cache) == state
    assert list(temp.iterdir()) == []
    ran = tmp_path / "planted-ran"
    plant(deps, ran)
    state = snapshot(app, cache)
    planted = compile_("--dry-run")
    assert planted.returncode == 0, planted.stdout + planted.stderr
    (sh,) = deps.glob("sh-*.whl")
    assert (
        f"{sh} is not a file deps.lock pins: not imported (a dry run leaves it)" in planted.stderr
    )
    assert f"into {temp / 'deploykey-deps-dry-run-'}" in planted.stdout
    assert not ran.exists()
    assert snapshot(app, cache) == state
    assert list(temp.iterdir()) == []


PLANT_BYTECODE = """
import importlib.util, marshal, os, sys
from pathlib import Path
ran, root = sys.argv[1], Path(sys.argv[2])
hostile = compile(f"open({ran!r}, 'a').close()\\n", "<planted>", "exec")
for source in root.rglob("*.py"):
    info = source.stat()
    if sys.argv[3] == "source":
        source.write_text(f"open({ran!r}, 'a').close()\\n" + source.read_text())
        continue
    # The source as it was; beside it the bytecode Python trusts for it (PEP 3147, PEP 552: the
    # source's mtime and size in the header), running other code.
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(info.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (info.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(header + marshal.dumps(hostile))
"""


@pytest.mark.parametrize("how", ["source", "bytecode"])
def test_code_planted_beside_the_kept_wheels_never_runs(tmp_path: Path, how: str) -> None:
    """Build code of build N leaves the kept wheels as they are, and beside them what a kit that
    kept an unpacked copy (or Python's bytecode cache of one) would import: every module unpacked
    in the deps dir, a .pth and a sitecustomize there, and then in every source file under the
    kit's part of the temp dir either code of its own or, the source untouched, a cached .pyc
    whose header matches the source's mtime and size (what Python checks before it trusts one).
    Build N+1 imports from the bytes of the wheels it hashed: none of that runs, and nothing is
    downloaded again."""
    without_the_kits_dependencies()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = system_env(tmp_path, temp)
    first = scan(tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    deps = next(temp.glob("deploykey-deps-*/py3*"))
    ran = tmp_path / "planted-ran"
    for wheel in deps.glob("*.whl"):
        with zipfile.ZipFile(wheel) as unpacked:
            unpacked.extractall(deps)
    (deps / "planted.pth").write_text(f"import os; open({str(ran)!r}, 'a').close()\n")
    (deps / "sitecustomize.py").write_text("")
    planted = [str(SYSTEM_PYTHON), "-I", "-c", PLANT_BYTECODE, str(ran), str(deps.parent), how]
    subprocess.run(planted, check=True)
    assert list(deps.parent.rglob("*.py")) and not ran.exists()
    second = scan(tmp_path, env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert not ran.exists()
    assert "Installing" not in second.stdout and "not imported" not in second.stderr
    assert list(temp.iterdir()) == [deps.parent]  # what it unpacked is gone


FORGE_BYTECODE = """
import marshal, sys
from pathlib import Path
ran, directory, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
hostile = marshal.dumps(compile(f"open({ran!r}, 'a').close()\\n", "<planted>", "exec"))
(directory / "0123456789abcdef-gone.py.code").write_bytes(b"from a wheel no longer kept")
for kept in directory.glob("*.code"):
    data = kept.read_bytes()
    if how == "seal kept":  # the seal as it was, other code after it
        kept.write_bytes(data[:32] + hostile)
    else:  # a seal build code can make: keyed by what it could read (here, nothing secret)
        import hashlib, hmac
        kept.write_bytes(hmac.new(b"", hostile, hashlib.sha256).digest() + hostile)
"""


@pytest.mark.parametrize("how", ["seal kept", "seal forged"])
def test_bytecode_changed_by_build_code_never_runs(tmp_path: Path, how: str) -> None:
    """bin/compile keeps the bytecode it compiled from the hashed wheels in the build cache, each
    module sealed with an HMAC keyed from the build's deploy key, so that the next build does not
    compile them again. Build N's code (which never had the key) replaces each with code of its
    own; build N+1, with the same key, runs none of it: it compiles from the wheels again and
    keeps that, which build N+2 then loads."""
    without_the_kits_dependencies()
    app, cache, env_dir = tmp_path / "app", tmp_path / "cache", tmp_path / "env"
    for directory in (app, cache, env_dir):
        directory.mkdir()
    (app / "requirements.txt").write_text("# none\n")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    (env_dir / "DEPLOY_KEY").write_text((tmp_path / "k").read_text())
    argv = [str(SYSTEM_PYTHON), "-I", str(KIT / "lib" / "deploykey"), "compile"]
    argv += [str(app), str(cache), str(env_dir)]
    env = system_env(tmp_path, tmp_path, DEPLOYKEY_APP_PATH=str(tmp_path / "run-time-app"))

    def build() -> subprocess.CompletedProcess[str]:
        shutil.rmtree(app / ".venv", ignore_errors=True)  # each build has a build dir of its own
        # Other bytes each build: read with yaml each time (a parse of the same bytes is kept).
        (app / "deploykey.yml").write_text(f"# nothing to set ({os.urandom(8).hex()})\n")
        return subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=300)

    first = build()
    assert first.returncode == 0, first.stdout + first.stderr
    (bytecode,) = (cache / "deploykey" / "deps").glob("bytecode-py3*")
    kept = {path.name: path.read_bytes() for path in bytecode.iterdir()}
    assert any(name.endswith("-yaml.constructor.py.code") for name in kept), sorted(kept)
    ran = tmp_path / "planted-ran"
    forge = [str(SYSTEM_PYTHON), "-I", "-c", FORGE_BYTECODE, str(ran), str(bytecode), how]
    subprocess.run(forge, check=True)
    assert {path.name for path in bytecode.iterdir()} > set(kept) and not ran.exists()
    second = build()
    assert second.returncode == 0, second.stdout + second.stderr
    assert not ran.exists()
    # kept anew, and what no wheel kept now compiled removed
    assert {path.name: path.read_bytes() for path in bytecode.iterdir()} == kept
    third = build()
    assert third.returncode == 0, third.stdout + third.stderr
    assert {path.name: path.read_bytes() for path in bytecode.iterdir()} == kept


def test_the_bytecode_seal_is_keyed_by_private_keys_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DEPLOY_KEY_* value that is not a private key (a guessable one would key a seal build
    code could make) keys nothing; a key as it is or in base64, in ENV_DIR or the environment,
    does; another key (a rotation) keys another seal."""
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    argv = ["deploykey", "compile", str(tmp_path / "app"), str(tmp_path / "cache"), str(env_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    for name in [name for name in os.environ if SECRET_NAME.match(name)]:
        monkeypatch.delenv(name)
    (env_dir / "DEPLOY_KEY_HOSTS").write_text("github.com\n")
    monkeypatch.setenv("DEPLOY_KEY", "not a key")
    assert seal_key() is None
    keys = []
    for name in ("a", "b"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
        keys.append((tmp_path / name).read_bytes())
    (env_dir / "DEPLOY_KEY").write_bytes(keys[0])
    first = seal_key()
    assert first is not None and seal_key() == first
    (env_dir / "DEPLOY_KEY").write_bytes(keys[1])
    assert seal_key() not in (None, first)
    (env_dir / "DEPLOY_KEY").unlink()
    monkeypatch.setenv("DEPLOY_KEY_OTHER", base64.b64encode(keys[0]).decode())
    assert seal_key() not in (None, first)
