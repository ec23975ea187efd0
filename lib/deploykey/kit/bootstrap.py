"""Making the kit's own dependencies importable before anything else runs, outside the app dir.

bin/* run with the build image's system python3, which has none of `sh`, `python-dotenv`,
`pyyaml` and `ahocorasick-rs` (the last optional: see OPTIONAL). When one is missing, the kit
imports them from wheels, and only from the files deps.lock (beside this module) pins: every wheel
PyPI has for one version of each, by sha256. pip downloads them (`--require-hashes`) into a deps
dir that later runs reuse: DEPLOYKEY_DEPS_DIR; for bin/compile (but for a dry run, which keeps
nothing: a temp dir removed at exit) and `install --cache-dir` (a BuildKit cache mount), the build
cache; else a private dir in the system temp dir. Build code can write all of these, as the user
that later builds run as, with a new key. So every run hashes each wheel there again before any
import, and imports from the bytes it hashed, held in memory (`Wheels`; an extension module is
written to a new private directory, removed at exit): nothing a build could have changed is
imported, and no `__pycache__` is read or written. The bytecode it compiles is kept beside the
deps dir only sealed with the build's keys (`Bytecode`). A file deps.lock does not pin is removed
and downloaded again (in DEPLOYKEY_DEPS_DIR, which is yours, refused). What the Python has itself (its site-packages;
bin/* run it with -I, so no PYTHONPATH or user site) is that Python's, used as it is.
Standard library only; this is the one place besides `run` that starts a process, because it
installs `sh` itself.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import importlib
import importlib.machinery
import importlib.util
import io
import marshal
import os
import pkgutil
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from deploykey.core import output, permissions
from deploykey.core.childenv import child_env
from deploykey.core.errors import UserError

if TYPE_CHECKING:  # importlib.abc imports importlib.resources: 16 ms of start-up (3.11)
    from importlib.abc import Loader

MINIMUM = (3, 10)
# import name -> the distribution deps.lock pins (pyproject.toml lists the ranges it is within)
REQUIREMENTS = {"sh": "sh", "dotenv": "python-dotenv", "yaml": "pyyaml"}
# The leak check's fast search (see lib/deploykey/leak/scan.py): optional. It is compiled (Rust), so it
# comes from a wheel only; where there is none for this Python (musl, an uncommon CPU), the scan
# searches with Python alone, and a file in the deps dir stops later runs asking pip again.
OPTIONAL = {"ahocorasick_rs": "ahocorasick-rs"}
NO_WHEEL = "no-wheel-for-ahocorasick-rs"
# Commands that must stay fast and need no dependency (bin/detect runs on every push).
WITHOUT_DEPENDENCIES = ("detect", "--version", "-h", "--help")
LOCK = "deps.lock"  # written by .ci/deps_lock.py
# Every wheel pinned is under 1 MB: a far bigger file in a deps dir is refused unread.
LARGEST = 64 << 20


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@cache
def pins() -> dict[str, Pin]:
    """deps.lock, by distribution: read through the loader, so from the kit's lib/ as from the
    zipapp (deploykey.pyz)."""
    data = pkgutil.get_data("deploykey", LOCK)
    assert data is not None, LOCK
    found = {}
    for line in data.decode().replace("\\\n", " ").splitlines():
        if "==" in line and not line.startswith("#"):
            pinned, *hashes = line.split()
            name, version = pinned.split("==")
            digests = frozenset(digest.removeprefix("--hash=sha256:") for digest in hashes)
            found[name] = Pin(name, version, digests)
    return found


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


# The deps dir is per Python version: a compiled wheel for one does not import in another.
PYTHON = f"py{sys.version_info[0]}{sys.version_info[1]}"


def deps_dir() -> Path:
    """DEPLOYKEY_DEPS_DIR; for bin/compile, and for `install --cache-dir` (a Docker cache mount),
    the build cache (kept between builds: the first build installs, later ones find them); else a
    private dir in the system temp dir."""
    configured = os.environ.get("DEPLOYKEY_DEPS_DIR")
    if configured:
        return Path(configured)
    cache = _build_cache()
    if cache is not None:
        return cache / "deps" / PYTHON
    return Path(tempfile.gettempdir(), f"deploykey-deps-{os.getuid()}", PYTHON)


def _build_cache() -> Path | None:
    """The kit's part of a build cache this command was given: bin/compile's CACHE_DIR, or the
    directory `install`, `fetch` or `scan --cache-dir` names (a BuildKit cache mount). Build code
    can write either."""
    if os.environ.get("DEPLOYKEY_DEPS_DIR") or len(sys.argv) < 2:
        return None
    if sys.argv[1] == "compile" and len(sys.argv) > 3 and Path(sys.argv[3]).is_dir():
        return Path(sys.argv[3]).resolve() / "deploykey"
    cache = _option("--cache-dir") or os.environ.get("DEPLOYKEY_CACHE_DIR")
    if sys.argv[1] in ("install", "fetch", "scan") and cache and Path(cache).is_dir():
        return Path(cache).resolve()
    return None


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
# pip's words when a file it downloaded is not one the lock pins: where it came from, its hash.
MISMATCH = re.compile(r"DO NOT MATCH THE HASHES.*?\n\s*\S+ from (\S+).*?Got\s+([0-9a-f]{64})", re.S)


def ensure() -> None:
    try:
        _check_install_mounts()  # first: the deps dir may be in a cache this user cannot enter
        _ensure()
    except UserError as error:
        output.error(error)
        sys.exit(error.exit_code)


def _ensure() -> None:
    if not missing():
        return
    target = deps_dir()
    dry = _build_cache() is not None and _dry_run()
    for path in _import(target, keep=not dry):
        if os.environ.get("DEPLOYKEY_DEPS_DIR"):  # yours: not ours to delete
            raise UserError("deps::tampered", file=path, found=_digest(path))
        if dry:
            output.warn(f"{path} is not a file deps.lock pins: not imported (a dry run leaves it)")
        else:
            output.warn(f"{path} is not a file deps.lock pins: not imported; removed")
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    if not missing():
        return
    if dry:
        # A dry run writes nothing kept: what is missing goes to a temp dir removed at exit.
        target = _throwaway()
    try:
        # The whole set: the directory replaces any earlier, partial one.
        _download(target, [*REQUIREMENTS.values(), *OPTIONAL.values()])
    except UserError as error:
        if error.slug != "deps::bootstrap":  # unreachable, tampered: not ahocorasick-rs's fault
            raise
        output.warn(
            "could not install ahocorasick-rs, the leak check's fast search, for this Python: "
            "the scan will search with Python alone, several times slower"
        )
        _download(target, list(REQUIREMENTS.values()))
        # The rest installs: this Python has no wheel of ahocorasick-rs. Not again.
        (target / NO_WHEEL).touch()
    for path in _import(target, keep=not dry):  # pip checked each file: a race got here
        raise UserError("deps::tampered", file=path, found=_digest(path))


def _import(deps: Path, keep: bool = True) -> list[Path]:
    """Makes the wheels in `deps` that deps.lock pins importable, and returns the files there it
    does not pin, none of which is imported. Imported from the bytes hashed, held in this process
    (`Wheels`): nothing imported was where build code could reach it before this run (neither a
    module nor a cached .pyc that shadows one)."""
    allowed = {digest for pin in pins().values() for digest in pin.hashes}
    wheels, foreign = [], []
    for path in sorted(deps.glob("*.whl")):  # nothing, in a directory this user cannot read
        data = _read(path)
        digest = None if data is None else hashlib.sha256(data).hexdigest()
        if data is not None and digest in allowed:
            wheels.append(Wheel(path, data, digest))
        else:
            foreign.append(path)
    if wheels:
        # Not in DEPLOYKEY_DEPS_DIR (yours): only in the kit's own, which the deps dir is in.
        mine = not os.environ.get("DEPLOYKEY_DEPS_DIR")
        directory = deps.parent / f"bytecode-{PYTHON}"
        bytecode = Bytecode(directory, keep, {wheel.digest for wheel in wheels}) if mine else None
        # Ahead of every other finder, as the unpacked copy was first on sys.path: the pinned
        # version, not one the Python has (Debian's python3 has PyYAML 6.0 in dist-packages).
        sys.meta_path.insert(0, Wheels(wheels, bytecode))
        importlib.invalidate_caches()
    return foreign


@dataclass(frozen=True)
class Wheel:
    path: Path
    data: bytes = field(repr=False)
    digest: str  # sha256, one deps.lock lists


class Bytecode:
    """The modules `Wheels` compiled, kept for the next run beside the deps dir, each sealed with
    an HMAC keyed from the build's own secrets (`seal_key`): a module is loaded from there only if
    its seal checks, for this Python's bytecode (and -O), this wheel (by sha256) and module in it,
    else compiled from the wheel again, and kept again. Build code can write the directory, but
    never had the secrets: it can neither forge a seal nor test a guess. Without a secret (an
    agent only, `scan`, a key elsewhere), nothing is read or kept. `marshal` is only ever asked
    to read bytes whose seal checked (it is not safe on any other: its documentation)."""

    def __init__(self, directory: Path, writable: bool, wheels: set[str]) -> None:
        self.directory, self.writable = directory, writable
        self.wheels = {digest[:16] for digest in wheels}  # what `_file` names files by
        self.key: bytes | None = None
        self.derived = self.pruned = False

    def load(self, origin: tuple[str, str]) -> types.CodeType | None:
        key = self._key()
        data = _read(self._file(origin)) if key else None
        if key is None or data is None:
            return None
        seal, body = data[:32], data[32:]
        if not hmac.compare_digest(seal, self._seal(key, origin, body)):
            return None
        code = marshal.loads(body)  # noqa: S302 - sealed by this build's secrets: written by the kit
        return code if isinstance(code, types.CodeType) else None

    def keep(self, origin: tuple[str, str], code: types.CodeType) -> None:
        """Best effort: a cache this user cannot write, or a link where the directory should
        be (build code's), keeps nothing."""
        key = self._key()
        if key is None or not self.writable:
            return
        body = marshal.dumps(code)
        if not permissions.write_private(self._file(origin), self._seal(key, origin, body) + body):
            return
        if not self.pruned:  # once a run: what wheels no longer kept (another lock) compiled
            self.pruned = True
            with contextlib.suppress(OSError):
                for old in self.directory.iterdir():
                    if old.name.split("-")[0] not in self.wheels:
                        old.unlink()

    def _key(self) -> bytes | None:
        if not self.derived:
            self.key, self.derived = seal_key(), True
        return self.key

    def _file(self, origin: tuple[str, str]) -> Path:
        digest, member = origin
        return self.directory / f"{digest[:16]}-{member.replace('/', '.')}.code"

    @staticmethod
    def _seal(key: bytes, origin: tuple[str, str], body: bytes) -> bytes:
        mac = hmac.new(key, b"deploykey/bytecode/v1", hashlib.sha256)
        optimize = str(sys.flags.optimize).encode()  # -O compiles other bytecode (no asserts)
        for data in (importlib.util.MAGIC_NUMBER, optimize, *(p.encode() for p in origin), body):
            mac.update(len(data).to_bytes(8, "big") + data)
        return mac.digest()


# Where the kit reads keys from (sources.KEY_NAME, githubapp.PRIVATE_KEY), before it can.
SECRET_NAME = re.compile(r"^(?:DEPLOY_KEY(?:_[A-Z0-9_]+)?|GITHUB_APP_PRIVATE_KEY)$")


def seal_key() -> bytes | None:
    """A key for `Bytecode`'s seals, derived (HMAC as HKDF-Extract, RFC 5869) from the build's
    private keys, read where the kit reads them before it has its dependencies: DEPLOY_KEY* and
    GITHUB_APP_PRIVATE_KEY in the environment, in bin/compile's ENV_DIR, and for `install` and
    `fetch` in /run/secrets and the --env-dir directory. The kit removes each before any build code
    runs (SECURITY.md). Only values that are private keys (PEM or OpenSSH, as they are or in
    base64) count: a short or guessable value would key nothing build code could not forge. None
    when there is none."""
    values = [value for name, value in os.environb.items() if SECRET_NAME.match(os.fsdecode(name))]
    places = []
    if len(sys.argv) > 4 and sys.argv[1] == "compile":
        places.append(Path(sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] in ("install", "fetch"):
        places += [Path("/run/secrets"), *map(Path, _all("--env-dir"))]
    for place in places:
        try:
            files = sorted(place.iterdir())
        except OSError:  # not a directory (a .env file), or not there
            continue
        found = (_read(file) for file in files if SECRET_NAME.match(file.name))
        values += [value for value in found if value is not None]
    keys = sorted({value for value in values if _private_key(value)})
    if not keys:
        return None
    material = b"".join(len(value).to_bytes(8, "big") + value for value in keys)
    return hmac.new(b"deploykey/bytecode-seal/v1", material, hashlib.sha256).digest()


def _private_key(value: bytes) -> bool:
    if b"PRIVATE KEY-----" in value:
        return True
    try:
        return b"PRIVATE KEY-----" in base64.b64decode(b"".join(value.split()), validate=True)
    except ValueError:
        return False


# PyYAML's LibYAML binding (2.7 MB): yaml/__init__.py imports it if it can, else goes on without
# (`__with_libyaml__ = False`); the kit reads deploykey.yml with yaml.safe_load, whose SafeLoader is
# pure Python either way, so writing it out and loading it would be start-up spent on nothing.
UNUSED_EXTENSIONS = frozenset({"yaml._yaml"})


class Wheels:
    """An import finder and loader (PEP 451) over wheels held in memory, already hashed. A pure
    Python module is compiled from the wheel's bytes, as zipimport does from an archive
    (Lib/zipimport.py), but the archive is never read again from disk, and no bytecode is written
    or read: no `__pycache__` is consulted, so a planted .pyc is never one. An extension module
    (ahocorasick-rs), which the dynamic loader can only open as a file, is written
    when first imported into a new private directory (mkdtemp: 0700) removed at exit. Unpacking
    every wheel and compiling each module there (writing its .pyc) was most of the start-up."""

    def __init__(self, wheels: list[Wheel], bytecode: Bytecode | None = None) -> None:
        self.members: dict[str, tuple[Path, zipfile.ZipFile, str]] = {}
        for wheel in wheels:
            archive = zipfile.ZipFile(io.BytesIO(wheel.data))
            for name in archive.namelist():
                self.members[name] = (wheel.path, archive, wheel.digest)
        self.bytecode = bytecode
        self.names: dict[str, str] = {}  # module name -> its member
        self.root: str | None = None
        self.extracted: set[str] = set()

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        base = fullname.replace(".", "/")
        for member, package in ((f"{base}/__init__.py", True), (f"{base}.py", False)):
            if member in self.members:
                self.names[fullname] = member
                wheel = self.members[member][0]
                loader = cast("Loader", self)  # a Loader by protocol (PEP 451), not by base
                spec = importlib.machinery.ModuleSpec(
                    fullname, loader, origin=str(wheel / member), is_package=package
                )
                spec.has_location = True  # __file__: the module in its wheel, as zipimport says
                return spec
        if fullname in UNUSED_EXTENSIONS:
            return None
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if base + suffix in self.members:
                file = self._extract(base + suffix)
                loader = importlib.machinery.ExtensionFileLoader(fullname, file)
                return importlib.util.spec_from_file_location(fullname, file, loader=loader)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None and spec.origin is not None
        member = self.names[spec.name]
        origin = (self.members[member][2], member)  # the wheel's sha256, the module in it
        code = self.bytecode.load(origin) if self.bytecode else None
        if code is None:
            # dont_inherit: not this module's `from __future__ import annotations`
            code = compile(self._read(member), spec.origin, "exec", dont_inherit=True)
            if self.bytecode:
                self.bytecode.keep(origin, code)
        exec(code, module.__dict__)  # noqa: S102

    def get_source(self, fullname: str) -> str | None:
        """For tracebacks (linecache asks the module's loader)."""
        member = self.names.get(fullname)
        return None if member is None else importlib.util.decode_source(self._read(member))

    def find_distributions(self, context: Any = None) -> Iterator[Any]:
        """The wheels' metadata for importlib.metadata (`sh` reads its version at import)."""
        from importlib import metadata

        wanted = getattr(context, "name", None)
        holder = self

        class Distribution(metadata.Distribution):
            def __init__(self, info: str) -> None:
                self.info = info

            def read_text(self, filename: str) -> str | None:
                member = f"{self.info}/{filename}"
                return holder._read(member).decode() if member in holder.members else None

            def locate_file(self, path: Any) -> Any:
                return Path(holder.members[f"{self.info}/METADATA"][0], path)

        infos = {name.split("/")[0] for name in self.members if ".dist-info/" in name}
        for info in sorted(infos):
            project = info.split("-")[0]
            if wanted is None or _normal(wanted) == _normal(project):
                yield Distribution(info)

    def _read(self, member: str) -> bytes:
        return self.members[member][1].read(member)

    def _extract(self, member: str) -> str:
        if self.root is None:
            self.root = tempfile.mkdtemp(prefix="deploykey-import-")
            atexit.register(shutil.rmtree, self.root, ignore_errors=True)
        file = Path(self.root, *member.split("/"))
        if member not in self.extracted:  # find_spec may be asked again before the import
            file.parent.mkdir(parents=True, exist_ok=True)
            with file.open("xb") as out:
                out.write(self._read(member))
            self.extracted.add(member)
        return str(file)


def _normal(name: str) -> str:
    """A project name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _read(path: Path) -> bytes | None:
    """A regular file's bytes; None for a link, a FIFO (reading one would wait forever), a file
    this user cannot read, or one far bigger than any wheel pinned."""
    return permissions.read_regular(path, LARGEST)


def _digest(path: Path) -> str:
    data = _read(path)
    if data is None:
        return "it is not a regular file this user can read"
    return f"its sha256 is {hashlib.sha256(data).hexdigest()}, which deps.lock does not list"


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


# The build's keys, by the start of their names: DEPLOY_KEY*, and a GitHub App's private key
# (githubapp.PRIVATE_KEY), which may be a build's only key.
KEY_NAMES = ("DEPLOY_KEY", "GITHUB_APP_PRIVATE_KEY")


def _check_install_mounts() -> None:
    """`install` under a non-root USER: the secrets it reads and the cache mount it installs into
    are the user's, before anything is installed there (BuildKit makes both as root)."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("install", "fetch"):
        return
    from deploykey.core import permissions

    try:
        found = sorted(Path("/run/secrets").iterdir())
    except OSError:  # no secret mounted, or not listable: sources.gather says so later
        found = []
    keys = [path for path in found if path.name.upper().startswith(KEY_NAMES)]
    permissions.check_secrets(keys + [Path(file) for file in _all("--key-file")])
    cache = _build_cache()
    if cache is not None:
        permissions.check_cache(cache)


def _all(name: str) -> list[str]:
    arguments = sys.argv[2:]
    found = [arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a == name]
    return found + [a.split("=", 1)[1] for a in arguments if a.startswith(name + "=")]


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


def pip_python(venv: Path, requirements: list[str]) -> list[str]:
    """The command that runs pip: this Python's own; else (Debian's and Ubuntu's system python3,
    as on the Heroku stacks and in a minimal image, has no pip) the pip wheel the Python ships for
    ensurepip, run from the wheel as ensurepip itself runs it; else a venv at `venv`, which
    ensurepip fills. With -I, as pip runs below: the current dir (an app's own `pip/`) and the
    user site are not imported."""
    has_pip = subprocess.run(
        [sys.executable, "-I", "-m", "pip", "--version"], capture_output=True, check=False
    )
    if has_pip.returncode == 0:
        return [sys.executable, "-I", "-m", "pip"]
    wheel = bundled_pip()
    if wheel is not None:
        # No venv: making one runs pip once more (ensurepip unpacks this same wheel into it and
        # compiles it), which was most of a cold Docker build's first step (bench/docker.py).
        return [sys.executable, "-I", "-c", RUN_FROM_WHEEL, str(wheel)]
    python = venv / "bin" / "python"
    if not python.exists():
        made = subprocess.run(
            [sys.executable, "-I", "-m", "venv", str(venv)],
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
    return [str(python), "-I", "-m", "pip"]


# What ensurepip does to run pip without installing it (Lib/ensurepip/__init__.py, _run_pip): the
# wheel first on sys.path, then pip's __main__. A wheel is a zip archive pip runs from (pip's own
# docs, "Installation": `python pip.pyz`, and ensurepip since 3.4).
RUN_FROM_WHEEL = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('pip', run_name='__main__', alter_sys=True)"
)


def bundled_pip() -> Path | None:
    """The pip wheel ensurepip installs from: the distribution's (sysconfig's WHEEL_PKG_DIR,
    Debian's /usr/share/python-wheels) or the one bundled with ensurepip; both are the Python's
    own files, as trusted as the Python itself. None when the Python has neither (no ensurepip)."""
    import sysconfig

    places = [sysconfig.get_config_var("WHEEL_PKG_DIR") or ""]
    spec = importlib.util.find_spec("ensurepip")
    if spec is not None and spec.origin:
        places.append(str(Path(spec.origin).parent / "_bundled"))
    for place in places:
        if place:
            found = sorted(Path(place).glob("pip-*.whl"))
            if found:
                return found[-1]
    return None


def _download(target: Path, names: list[str]) -> None:
    """The wheels deps.lock pins for `names` (distributions), for this Python, into `target`; pip
    checks each against the lock's hashes (--require-hashes), and builds nothing from source."""
    locked = [pins()[name] for name in names]
    requirements = [pin.requirement for pin in locked]
    output.step(f"Installing deploykey's dependencies ({', '.join(requirements)}) into {target}")
    if not os.environ.get("DEPLOYKEY_DEPS_DIR"):
        _private_parent(target)
    with tempfile.TemporaryDirectory(prefix="deploykey-pip-") as scratch:
        lock = Path(scratch, LOCK)
        lock.write_text(
            "".join(
                " ".join([pin.requirement, *(f"--hash=sha256:{d}" for d in sorted(pin.hashes))])
                + "\n"
                for pin in locked
            )
        )
        # When this Python has no pip: its own ensurepip wheel, or a venv made for this download
        # alone. Never a pip kept where build code can write: it would run here, while
        # bin/compile's ENV_DIR still holds the keys.
        pip = pip_python(Path(scratch, "venv"), requirements)
        arguments = ["download", "--require-hashes", "--no-deps", "--only-binary=:all:"]
        _pip_into(target, "--dest", pip, requirements, *arguments, "-r", str(lock))


def pip_install(target: Path, requirements: list[str]) -> None:
    """`pip install --target`, replacing `target` whole (the build cache's uv: installer.py)."""
    pip = pip_python(target.parent / f"{target.name}-pip", requirements)
    arguments = ["install", "--no-warn-script-location", *requirements]
    _pip_into(target, "--target", pip, requirements, *arguments)


def _pip_into(
    target: Path, option: str, pip: list[str], packages: list[str], *arguments: str
) -> None:
    """pip ARGUMENTS with `option` (--target, --dest) naming a staging dir beside `target`, which
    then replaces it whole (an earlier, partial one included); on failure nothing is left and
    pip's last words are told, naming `packages`."""
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    argv = [*pip, *arguments[:1], option, str(staging), *arguments[1:]]
    argv += ["--no-input", "--disable-pip-version-check", "--quiet"]
    result = subprocess.run(argv, env=child_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        said = (result.stdout + result.stderr).strip().splitlines()
        unreachable = [line.strip() for line in said if UNREACHABLE.search(line)]
        if unreachable:
            # pip ran, but never reached the index: neither pip nor a wheel is what is missing.
            raise UserError(
                "deps::unreachable", packages=", ".join(packages), cause=unreachable[0][:300]
            )
        mismatch = MISMATCH.search(result.stdout + result.stderr)
        if mismatch:
            raise UserError(
                "deps::tampered",
                file=mismatch[1],
                found=f"pip got a file whose sha256 is {mismatch[2]}, which deps.lock does not list",
            )
        raise UserError(
            "deps::bootstrap",
            packages=", ".join(packages),
            detail="pip said: "
            + (" ".join(said[-3:]) if said else f"exit status {result.returncode}"),
            python=sys.executable,
        )
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    staging.rename(target)
