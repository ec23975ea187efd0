"""Making the kit's own dependencies importable before anything else runs, outside the app dir.

bin/* run with the build image's system python3, which has none of `sh`, `python-dotenv`,
`pyyaml` and `ahocorasick-rs` (the last optional: see OPTIONAL). When one is missing, they are
installed with that Python's pip into a private directory
in the system temp dir (never the app, whose contents are released), reused by later runs on the same
machine; for bin/compile (but for a dry run, which keeps nothing: a temp dir removed at exit) and `install --cache-dir` (a BuildKit cache mount), into the build cache, sealed with an HMAC keyed with the build's key
config vars, and imported by a later build only if the seal still holds (build code can write the
cache, never the key). Standard library only; this is the one place besides `run` that starts a process, because
it installs `sh` itself.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from deploykey import output
from deploykey.childenv import child_env
from deploykey.errors import UserError

MINIMUM = (3, 10)
# import name -> requirement (pyproject.toml lists the same ranges)
REQUIREMENTS = {"sh": "sh>=2.0,<3", "dotenv": "python-dotenv>=1.0,<2", "yaml": "pyyaml>=6.0,<7"}
# The leak check's fast search (see lib/deploykey/scan.py): optional. It is compiled (Rust), so it
# is installed from a wheel only; where there is none for this Python (musl, an uncommon CPU), the
# scan searches with Python alone, and a file in the deps dir stops later runs asking pip again.
OPTIONAL = {"ahocorasick_rs": "ahocorasick-rs>=1.0,<2"}
WHEEL_ONLY = "--only-binary=ahocorasick-rs"
NO_WHEEL = "no-wheel-for-ahocorasick-rs"
# Commands that must stay fast and need no dependency (bin/detect runs on every push).
WITHOUT_DEPENDENCIES = ("detect", "--version", "-h", "--help")


def check_python() -> None:
    if sys.version_info < MINIMUM:
        error = UserError("python::too-old", python=sys.executable, version=sys.version.split()[0])
        output.error(error)
        sys.exit(error.exit_code)


def missing() -> list[str]:
    needed = _lacking(REQUIREMENTS)
    optional = _lacking(OPTIONAL)
    # Only then: deps_dir() asks tempfile for the temp dir, which writes a probe file there.
    if optional and not _marked(deps_dir() / NO_WHEEL):
        needed += optional
    return needed


def _marked(path: Path) -> bool:
    """Whether a marker file is there; one in a directory this user cannot enter (a cache
    mount a root build filled) is not this user's to trust."""
    try:
        return path.exists()
    except OSError:
        return False


def _lacking(modules: dict[str, str]) -> list[str]:
    return [
        requirement
        for module, requirement in modules.items()
        if importlib.util.find_spec(module) is None
    ]


# The deps dir is per Python version: a venv or wheel for one does not import in another.
PYTHON = f"py{sys.version_info[0]}{sys.version_info[1]}"


def deps_dir() -> Path:
    """DEPLOYKEY_DEPS_DIR; for bin/compile, and for `install --cache-dir` (a Docker cache mount),
    the build cache (kept between builds: the first build installs, later ones find them); else a
    private dir in the system temp dir."""
    configured = os.environ.get("DEPLOYKEY_DEPS_DIR")
    if configured:
        return Path(configured)
    cache = _build_cache()
    if cache is not None and not _keyless():
        return _in_cache(cache)
    return Path(tempfile.gettempdir(), f"deploykey-deps-{os.getuid()}", PYTHON)


def _in_cache(cache: Path) -> Path:
    return cache / "deps" / PYTHON


def _build_cache() -> Path | None:
    """The kit's part of a build cache this command was given: bin/compile's CACHE_DIR, or the
    directory `install --cache-dir` names (a BuildKit cache mount). Build code can write either."""
    if os.environ.get("DEPLOYKEY_DEPS_DIR") or len(sys.argv) < 2:
        return None
    if sys.argv[1] == "compile" and len(sys.argv) > 3 and Path(sys.argv[3]).is_dir():
        return Path(sys.argv[3]).resolve() / "deploykey"
    cache = _option("--cache-dir") or os.environ.get("DEPLOYKEY_CACHE_DIR")
    if sys.argv[1] in ("install", "fetch") and cache and Path(cache).is_dir():
        return Path(cache).resolve()
    return None


def _keyless() -> bool:
    """`install --fetched`: the install step of a two-step Docker build, run with no key."""
    return len(sys.argv) > 2 and sys.argv[1] == "install" and "--fetched" in sys.argv[2:]


def _option(name: str) -> str | None:
    """The last value of `name` on the command line (`name VALUE` or `name=VALUE`): read before
    argparse, which is imported with the rest of the kit."""
    value = None
    arguments = sys.argv[2:]
    for index, argument in enumerate(arguments):
        if argument == name and index + 1 < len(arguments):
            value = arguments[index + 1]
        elif argument.startswith(name + "="):
            value = argument.split("=", 1)[1]
    return value


# pip's words when the index cannot be reached at all (TLS interception, proxy, DNS, offline).
UNREACHABLE = re.compile(
    r"CERTIFICATE_VERIFY_FAILED|SSLError|ProxyError|NewConnectionError|Temporary failure in name"
    r"|Name or service not known|Max retries exceeded|Network is unreachable|Connection refused"
)


def ensure() -> None:
    try:
        _check_install_mounts()  # first: the deps dir may be in a cache this user cannot enter
    except UserError as error:
        output.error(error)
        sys.exit(error.exit_code)
    if not missing():
        return
    cache = _build_cache()
    if cache is not None and _keyless():
        # `install --fetched` has no key (the fetch ran in an earlier step, with it): the
        # dependencies that step sealed in the cache are imported as they are, with nothing here
        # for planted code to take, and nothing is written there; if they are not there, they go
        # to a private temp dir.
        _use(_in_cache(cache))
        if not missing():
            return
    target = deps_dir()
    secret = _secret()
    if _build_cache() is not None and _dry_run():
        # A dry run writes nothing kept: it imports sealed dependencies from the build cache, and
        # installs what is missing into a temp dir that goes at exit, never into the cache.
        if target.exists() and _sealed(target, secret):
            _use(target)
        elif target.exists():
            output.warn(f"{target} is not as deploykey left it: not imported (a dry run leaves it)")
        if not missing():
            return
        target, secret = _throwaway(), None
    elif _build_cache() is not None and target.exists() and not _sealed(target, secret):
        # Build code can write the build cache: what it left there would run in this process,
        # which reads the keys next. Only a directory this kit sealed with them is imported.
        shutil.rmtree(target, ignore_errors=True)
        output.warn(f"{target} is not as deploykey left it: not imported; installing again")
    _use(target)
    if not missing():
        return
    try:
        # The whole set: the directory replaces any earlier, partial one.
        _install(target, [*REQUIREMENTS.values(), *OPTIONAL.values()])
    except UserError as first:
        if first.slug == "deps::unreachable":  # not ahocorasick-rs's fault: nothing installs
            output.error(first)
            sys.exit(first.exit_code)
        output.warn(
            "could not install ahocorasick-rs, the leak check's fast search, for this Python: "
            "the scan will search with Python alone, several times slower"
        )
        if _lacking(REQUIREMENTS):
            try:
                _install(target, list(REQUIREMENTS.values()))
            except UserError as error:
                output.error(error)
                sys.exit(error.exit_code)
            # The rest installs: this Python has no wheel of ahocorasick-rs. Not again.
            (target / NO_WHEEL).touch()
    if _build_cache() is not None and secret is not None:
        (target / SEAL).write_text(_seal(target, secret))
    _use(target)


def _dry_run() -> bool:
    """`compile ... --dry-run`, or DEPLOYKEY_DRY_RUN as config.load reads it (the environment,
    else ENV_DIR: a file per variable, or a .env file), before the rest of the kit is importable."""
    if len(sys.argv) < 3 or sys.argv[1] != "compile":
        return False
    if "--dry-run" in sys.argv[2:]:
        return True
    value = os.environ.get("DEPLOYKEY_DRY_RUN")
    if value is None and len(sys.argv) > 4:
        env = Path(sys.argv[4])
        try:
            if env.is_dir():
                value = (env / "DEPLOYKEY_DRY_RUN").read_text()
            elif env.is_file():  # the last plain `NAME=value` line, as python-dotenv reads it
                for line in env.read_text(errors="replace").splitlines():
                    name, _, rest = line.strip().removeprefix("export ").partition("=")
                    if name.strip() == "DEPLOYKEY_DRY_RUN":
                        value = rest.strip().strip("'\"")
        except OSError:
            value = None
    return (value or "").strip().lower() in ("1", "true", "yes", "on")  # config.TRUE


def _throwaway() -> Path:
    """A private deps dir in the system temp dir, removed when this process exits."""
    root = Path(tempfile.mkdtemp(prefix="deploykey-deps-dry-run-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root / PYTHON


SEAL = ".deploykey-seal"
# The build's keys, by the start of their names: DEPLOY_KEY*, and a GitHub App's private key
# (githubapp.PRIVATE_KEY), which may be a build's only key.
KEY_NAMES = ("DEPLOY_KEY", "GITHUB_APP_PRIVATE_KEY")


def _check_install_mounts() -> None:
    """`install` under a non-root USER: the secrets it reads and the cache mount it installs into
    are the user's, before anything is installed there (BuildKit makes both as root)."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("install", "fetch"):
        return
    from deploykey import permissions

    try:
        found = sorted(Path("/run/secrets").iterdir())
    except OSError:  # no secret mounted, or not listable: sources.gather says so later
        found = []
    keys = [path for path in found if path.name.upper().startswith(KEY_NAMES)]
    permissions.check_secrets(keys + [Path(file) for file in _all("--key-file")])
    cache = _build_cache()
    if cache is not None:
        permissions.check_cache(cache)


def _secret() -> bytes | None:
    """What only the build itself knows: its keys, raw (bin/compile: the KEY_NAMES files of
    ENV_DIR; `install`: the KEY_NAMES variables, BuildKit secrets, --env-dir and --key-file). No
    package's build code ever has them (they are removed before any runs), so it cannot seal a
    directory it changed."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("compile", "install", "fetch"):
        return None
    places: list[Path] = []
    parts: list[bytes] = []
    if sys.argv[1] == "compile":
        if len(sys.argv) < 5:
            return None
        places.append(Path(sys.argv[4]))
    else:
        parts += [
            f"{name}={value}".encode()
            for name, value in sorted(os.environ.items())
            if name.startswith(KEY_NAMES)
        ]
        places += [Path("/run/secrets"), *map(Path, filter(None, [_option("--env-dir")]))]
        places += [Path(file) for file in _all("--key-file")]
    for place in places:
        try:
            if place.is_file():
                parts.append(place.read_bytes())
            elif place.is_dir():
                parts += [
                    path.read_bytes()
                    for path in sorted(place.iterdir())
                    if path.name.upper().startswith(KEY_NAMES) and path.is_file()
                ]
        except OSError:
            continue
    return b"\0".join(parts) or None


def _all(name: str) -> list[str]:
    arguments = sys.argv[2:]
    found = [arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a == name]
    return found + [a.split("=", 1)[1] for a in arguments if a.startswith(name + "=")]


def _seal(target: Path, secret: bytes) -> str:
    """An HMAC, keyed with the build's secret, of every path and byte under `target`."""
    import hashlib
    import hmac

    digest = hashlib.sha256()
    for path in sorted(target.rglob("*")):
        if path.name == SEAL and path.parent == target:
            continue
        relative = str(path.relative_to(target)).encode()
        if path.is_symlink():
            digest.update(b"L" + relative + b"\0" + str(path.readlink()).encode() + b"\0")
        elif path.is_file():
            digest.update(b"F" + relative + b"\0" + path.read_bytes() + b"\0")
        else:
            digest.update(b"D" + relative + b"\0")
    return hmac.new(secret, digest.digest(), "sha256").hexdigest()


def _sealed(target: Path, secret: bytes | None) -> bool:
    import hmac

    try:
        recorded = (target / SEAL).read_text().strip()
    except OSError:
        return False
    return secret is not None and hmac.compare_digest(recorded, _seal(target, secret))


def _use(target: Path) -> None:
    if target.is_dir() and str(target) not in sys.path:
        sys.path.insert(0, str(target))
        importlib.invalidate_caches()


def _private_parent(target: Path) -> None:
    """The parent of the deps dir is ours alone: another user's planted copy would run as us."""
    parent = target.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = parent.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise UserError(
            "deps::bootstrap",
            packages=", ".join(REQUIREMENTS.values()),
            detail=f"{parent} is not a private directory of this user.",
            python=sys.executable,
        )


def pip_python(venv: Path, requirements: list[str]) -> str:
    """A Python that has pip: this one, or (Debian's and Ubuntu's system python3, as on the Heroku
    stacks and in a minimal image, has no pip) a venv at `venv`, which ensurepip fills."""
    has_pip = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, check=False
    )
    if has_pip.returncode == 0:
        return sys.executable
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)],
            env=child_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise UserError(
                "deps::bootstrap",
                packages=", ".join(requirements),
                detail=f"{sys.executable} has no pip, and `python3 -m venv` failed: {made.stderr.strip()[-200:]}",
                python=sys.executable,
            )
    return str(python)


def _install(target: Path, requirements: list[str]) -> None:
    output.step(f"Installing deploykey's dependencies ({', '.join(requirements)}) into {target}")
    if not os.environ.get("DEPLOYKEY_DEPS_DIR"):
        _private_parent(target)
    pip_install(target, requirements)


def pip_install(target: Path, requirements: list[str]) -> None:
    """`pip install --target` into a staging dir beside `target` that then replaces it whole (an
    earlier, partial one included); on failure nothing is left and pip's last words are told."""
    python = pip_python(target.parent / f"{target.name}-pip", requirements)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    argv = [
        python,
        "-m",
        "pip",
        "install",
        "--target",
        str(staging),
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--quiet",
        # Compiled packages from wheels only: a build image has no Rust toolchain, and building
        # from source would take minutes before failing.
        WHEEL_ONLY,
        *requirements,
    ]
    result = subprocess.run(argv, env=child_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        said = (result.stdout + result.stderr).strip().splitlines()
        unreachable = [line.strip() for line in said if UNREACHABLE.search(line)]
        if unreachable:
            # pip ran, but never reached the index: neither pip nor a wheel is what is missing.
            raise UserError(
                "deps::unreachable", packages=", ".join(requirements), cause=unreachable[0][:300]
            )
        raise UserError(
            "deps::bootstrap",
            packages=", ".join(requirements),
            detail="pip said: "
            + (" ".join(said[-3:]) if said else f"exit status {result.returncode}"),
            python=sys.executable,
        )
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
