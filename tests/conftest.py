"""Fixtures: the local git server, test keys generated at run time, and a Heroku-like build layout.

No private key is committed: every key is made by ssh-keygen when a test runs. The e2e tests run by
default; a skipped test fails the run (see pytest_sessionfinish), so CI cannot pass with them off.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.register_assert_rewrite("support")

from deploykey.kit.bootstrap import pins  # noqa: E402
from support import engine as engines  # noqa: E402
from support.githubapi import GitHubAPI, GitHubGit, Token, make_app_key  # noqa: E402
from support.gitserver import GitServer  # noqa: E402
from support.nonroot import NonRoot, kit_deps, public_dir  # noqa: E402

KIT = Path(__file__).resolve().parents[1]
BIN = KIT / "bin"
# Wheelhouses kept between runs are named for the kit's pinned dependencies (deps.lock): a bump
# makes new ones, instead of offline builds failing on the old versions.
LOCK_TAG = hashlib.sha256((KIT / "lib" / "deploykey" / "deps.lock").read_bytes()).hexdigest()[:12]
FLIT = "flit_core==3.9.0"
# The kit's own dependencies at the versions lib/deploykey/deps.lock pins: the bootstrap installs
# no others, so a wheelhouse that stands in for PyPI holds these.
KIT_PINS = tuple(pin.requirement for pin in pins().values())
_labels = itertools.count(1)
# A command prefix: run in a mount namespace of its own with an empty tmpfs over /proc, as in a
# container that shows none (the machine's /proc is never touched).
WITHOUT_PROC = [
    "unshare",
    "-m",
    "sh",
    "-c",
    'mount -t tmpfs -o size=64k deploykey-no-proc /proc && test ! -e /proc/self && exec "$@"',
    "sh",
]
UTILS_REQUIREMENT = "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a test that did not prove anything: fail the run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(
                f"FAILED: {len(skipped)} test(s) skipped; every test must run.", red=True
            )


# ---------------------------------------------------------------- the private packages on the server


def flit_package(
    module: str,
    version: str,
    body: str = "",
    backend: str | None = None,
    dependencies: tuple[str, ...] = (),
) -> dict[str, str]:
    """A tiny PEP 517 project built by flit_core (or an in-tree backend that wraps it)."""
    project = textwrap.dedent(
        f"""\
        [build-system]
        requires = ["{FLIT}"]
        build-backend = "{backend or "flit_core.buildapi"}"
        {'backend-path = ["."]' if backend else ""}

        [project]
        name = "{module.replace("_", "-")}"
        version = "{version}"
        description = "test package"
        dependencies = {list(dependencies)!r}
        """
    ).replace("'", '"')
    return {
        "pyproject.toml": project,
        f"{module}/__init__.py": f'"""{module}"""\n\n__version__ = "{version}"\n{body}',
    }


# A build backend that reports what it can see: its environment and its arguments, into $HOME.
ENV_DUMP_BACKEND = """\
import json, os, sys
from flit_core import buildapi as _flit

def _dump():
    path = os.path.join(os.environ.get("HOME", "/tmp"), "backend-saw.json")
    with open(path, "a") as f:
        f.write(json.dumps({"env": dict(os.environ), "argv": sys.argv}) + "\\n")

def build_wheel(*args, **kwargs):
    _dump()
    return _flit.build_wheel(*args, **kwargs)

def build_editable(*args, **kwargs):
    _dump()
    return _flit.build_editable(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
prepare_metadata_for_build_wheel = _flit.prepare_metadata_for_build_wheel
get_requires_for_build_editable = _flit.get_requires_for_build_editable
prepare_metadata_for_build_editable = _flit.prepare_metadata_for_build_editable
"""

# A build backend that waits, so a test can interrupt the install while pip is running.
SLOW_BACKEND = """\
import os, time
from flit_core import buildapi as _flit

def build_wheel(*args, **kwargs):
    open(os.path.join(os.environ.get("HOME", "/tmp"), "slow-started"), "w").close()
    time.sleep(120)
    return _flit.build_wheel(*args, **kwargs)

get_requires_for_build_wheel = _flit.get_requires_for_build_wheel
"""


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[engines.Engine]:
    """A real dockerd (Debian's docker.io, Engine 20.10 with BuildKit) for the whole session, with
    the base image imported; .ci/setup installs it. One for the Docker and the pack tests: two
    engines at once would share the machine's containerd."""
    assert engines.available(), "Debian's docker.io is not installed: run .ci/setup"
    started = engines.start()
    try:
        engines.import_base_image(started)
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def git_server() -> Iterator[GitServer]:
    server = GitServer.create()
    server.add_repo(
        "acme/private-utils",
        flit_package(
            "private_utils", "1.0", 'def hello():\n    return "hello from private-utils"\n'
        ),
    )
    server.add_repo("acme/other-lib", flit_package("other_lib", "2.0"))
    server.add_repo("acme/billing", flit_package("billing", "2.0", "def total():\n    return 42\n"))
    server.add_repo("acme/sub", {"README": "a submodule, fetched by git with the scp-like URL\n"})
    server.add_repo(
        "acme/app-core",
        flit_package("app_core", "1.0", dependencies=(UTILS_REQUIREMENT,)),
        submodules={"vendor/sub": ("git@github.com:acme/sub.git", "acme/sub")},
    )
    server.add_repo("group/lib", flit_package("group_lib", "3.0"))
    server.add_repo(
        "acme/env-dumper",
        {
            **flit_package("env_dumper", "0.1", backend="dump_backend"),
            "dump_backend.py": ENV_DUMP_BACKEND,
        },
    )
    server.add_repo(
        "acme/slow-lib",
        {
            **flit_package("slow_lib", "0.1", backend="slow_backend"),
            "slow_backend.py": SLOW_BACKEND,
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flit_core, the build backend of the test packages, so that builds need no package index."""
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "deploykey-tests"
        / "wheelhouse"
    )
    if not any(cache.glob("flit_core-*.whl")):
        cache.mkdir(parents=True, exist_ok=True)
        download_wheels(cache, FLIT, deps=False)
    return cache


# The Python of the build images the tests use (the buildah base image, Debian bookworm's python3).
CP311_X86_64 = (
    *("--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"),
    *("--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64"),
    *("--platform", "any"),
)


def download_wheels(
    directory: Path, *packages: str, cp311: bool = False, deps: bool = True
) -> None:
    """`pip download` binary wheels of packages (and their dependencies, unless deps=False) into
    directory: for the Python that runs the tests, or with cp311 for CPython 3.11 on x86_64."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary", ":all:"),
            *([] if deps else ["--no-deps"]),
            *(CP311_X86_64 if cp311 else ()),
            *("-d", str(directory), *packages),
        ],
        check=True,
    )


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class GeneratedKey:
    path: Path
    label: str

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def public(self) -> str:
        return " ".join(self.path.with_suffix(".pub").read_text().split()[:2])

    @property
    def fingerprint(self) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(self.path.with_suffix(".pub"))],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()[1]


def make_key(
    directory: Path, kind: str = "ed25519", passphrase: str = "", fmt: str | None = None
) -> GeneratedKey:
    label = f"k{next(_labels)}"
    path = directory / label
    argv = [
        "ssh-keygen",
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        f"{label}@test",
        "-f",
        str(path),
    ]
    if kind == "rsa":
        argv += ["-b", "2048"]
    if fmt:
        argv += ["-m", fmt]
    subprocess.run(argv, check=True)
    return GeneratedKey(path, label)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir()
    return directory


@pytest.fixture
def utils_key(git_server: GitServer, keys_dir: Path) -> GeneratedKey:
    """A deploy key that opens acme/private-utils (and, for dependency tests, the test-only repos)."""
    key = make_key(keys_dir)
    git_server.grant(
        key.label, key.public, ["acme/private-utils", "acme/env-dumper", "acme/slow-lib"]
    )
    return key


# ---------------------------------------------------------------- a Heroku-like build layout


REQUIREMENT = UTILS_REQUIREMENT


@dataclass
class Build:
    root: Path
    server: GitServer
    wheelhouse: Path
    env_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("build", "cache", "env", "home", "run"):
            (self.root / name).mkdir(exist_ok=True)
        (self.app / "requirements.txt").write_text(REQUIREMENT + "\n")
        (self.app / "deploykey.yml").write_text(self.server.deploykey_yml())

    @property
    def app(self) -> Path:
        return self.root / "build"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def env_dir(self) -> Path:
        return self.root / "env"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def app_path(self) -> Path:
        """The run-time path (Heroku's /app); it does not exist until the slug is 'extracted'."""
        return self.root / "run" / "app"

    def set_key(self, value: str | bytes, name: str = "DEPLOY_KEY") -> None:
        data = value.encode() if isinstance(value, str) else value
        (self.env_dir / name).write_bytes(data)

    def environ(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PIP_NO_INDEX": "1",
            "PIP_FIND_LINKS": str(self.wheelhouse),
            "DEPLOYKEY_APP_PATH": str(self.app_path),
            # pip: these tests read pip's output; test_installer.py builds with uv
            "DEPLOYKEY_INSTALLER": "pip",
        }
        for name in ("PYENV_ROOT", "PYENV_VERSION"):
            if name in os.environ:
                env[name] = os.environ[name]
        env.update(self.env_extra)
        env.update(extra)
        return env

    def compile(
        self, *args: str, env: dict[str, str] | None = None, timeout: int = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "compile"), str(self.app), str(self.cache), str(self.env_dir), *args],
            env=env or self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_app(self, code: str) -> subprocess.CompletedProcess[str]:
        """'Extract the slug' at the run-time path, and run Python from its venv there."""
        self.app_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(self.app), str(self.app_path)], check=True)
        python = self.app_path / ".venv" / "bin" / "python"
        return subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
        )


@pytest.fixture
def build(tmp_path: Path, git_server: GitServer, wheelhouse: Path) -> Build:
    return Build(tmp_path, git_server, wheelhouse)


# ---------------------------------------------------------------- a server that never answers


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte (a stuck
    proxy, a firewall that swallows the banner): its port, and the connections it accepted."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield silent.getsockname()[1], accepted
    finally:
        silent.close()
        for connection in accepted:
            connection.close()


# ---------------------------------------------------------------- independent checks


ANY_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}")


def key_fragments(key_text: str) -> list[bytes]:
    """What a copy of the key would contain: its body lines (after the first, which is header and
    public key) and a run of its base64 encoding. Computed here, independently of deploykey.leak.scan."""
    lines = [line for line in key_text.strip().splitlines() if not line.startswith("-----")]
    fragments = [line.encode() for line in lines[1:] if len(line) >= 40]
    encoded = base64.b64encode(key_text.encode())
    middle = len(encoded) // 2
    fragments.append(encoded[middle : middle + 40])
    return fragments


def files_with_key(roots: list[Path], key_text: str) -> list[str]:
    fragments = key_fragments(key_text)
    found = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            flat = data.replace(b"\r", b"").replace(b"\n", b"")
            if any(f in data or f in flat for f in fragments) or ANY_PRIVATE_KEY.search(data):
                found.append(str(path))
    return found


def text_has_key(text: str, key_text: str) -> bool:
    return any(
        f.decode() in text or f.decode() in text.replace("\n", "") for f in key_fragments(key_text)
    )


def snapshot(*roots: Path) -> dict[str, tuple[str, str]]:
    """Every path under the roots with its type and content hash: equal snapshots = no byte changed."""
    state: dict[str, tuple[str, str]] = {}
    for root in roots:
        if not root.exists():
            state[str(root)] = ("absent", "")
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            info = path.lstat()
            if path.is_symlink():
                state[str(path)] = ("link", os.readlink(path))
            elif path.is_dir():
                state[str(path)] = ("dir", oct(info.st_mode))
            else:
                state[str(path)] = (
                    oct(info.st_mode),
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                )
    return state


def key_dirs() -> set[str]:
    """The kit's key dirs that exist right now, wherever the kit may put them."""
    import tempfile

    # mkdtemp(prefix="deploykey-"): eight characters of [a-z0-9_] after the prefix; the test
    # servers' and harnesses' own dirs have longer names.
    name = re.compile(r"^deploykey-[a-z0-9_]{8}$")
    found: set[str] = set()
    for base in (Path("/dev/shm"), Path(tempfile.gettempdir())):
        if base.is_dir():
            found |= {str(p) for p in base.glob("deploykey-*") if name.match(p.name)}
    return found


# ---------------------------------------------------------------- Cloud Native Buildpacks


@pytest.fixture(scope="session")
def deploykey_buildpack() -> Iterator[Path]:
    """The repository as a buildpack directory (what `pack` would copy): buildpack.toml, bin, lib."""
    root = Path(tempfile.mkdtemp(prefix="deploykey-bp-", dir="/tmp"))
    target = root / "deploykey"
    target.mkdir()
    for name in ("buildpack.toml", "LICENSE"):
        shutil.copy2(KIT / name, target / name)
    for name in ("bin", "lib"):
        shutil.copytree(
            KIT / name, target / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    root.chmod(0o755)
    yield target
    shutil.rmtree(root)


@pytest.fixture(scope="session")
def scan_buildpack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="deploykey-scanbp-", dir="/tmp"))
    root.chmod(0o755)
    target = root / "scan"
    result = subprocess.run(
        [str(BIN / "deploykey"), "scan-buildpack", str(target)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    yield target
    shutil.rmtree(root)


# ---------------------------------------------------------------- runs as a user who is not root


@pytest.fixture(scope="session")
def nonroot_kit(wheelhouse: Path) -> Iterator[tuple[Path, Path]]:
    """The kit's dependencies for the system python3, and the test wheels, where nobody reads."""
    root = public_dir("deploykey-nonroot-kit-")
    wheels = root / "wheels"
    wheels.mkdir(mode=0o755)
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy(wheel, wheels)
        (wheels / wheel.name).chmod(0o644)
    yield kit_deps(root / "deps"), wheels
    shutil.rmtree(root)


@pytest.fixture
def nonroot(nonroot_kit: tuple[Path, Path]) -> Iterator[NonRoot]:
    """A world-traversable directory for one test, and deploykey run as nobody under it."""
    made = NonRoot(public_dir("deploykey-nonroot-"), *nonroot_kit)
    yield made
    made.remove()


# ---------------------------------------------------------------- image archives, made in memory


def tar_bytes(files: dict[str, bytes], compress: bool = False) -> bytes:
    """A tar archive of these files (gzip-compressed when asked), made in memory."""
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue()) if compress else raw.getvalue()


def image_members(layers: list[bytes], config: object, docker: bool) -> dict[str, bytes]:
    """A docker-save or OCI archive's members around these layers and this config."""
    import hashlib
    import json

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    config_bytes = config if isinstance(config, bytes) else json.dumps(config).encode()
    members: dict[str, bytes] = {}
    if docker:
        names = [f"{i}/layer.tar" for i in range(len(layers))]
        members.update(zip(names, layers, strict=True))
        members["config.json"] = config_bytes
        manifest = [{"Config": "config.json", "RepoTags": ["x:y"], "Layers": names}]
        members["manifest.json"] = json.dumps(manifest).encode()
        return members
    manifest_bytes = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": digest(config_bytes)},
            "layers": [{"digest": digest(layer)} for layer in layers],
        }
    ).encode()
    for blob in [config_bytes, manifest_bytes, *layers]:
        members["blobs/sha256/" + digest(blob).split(":")[1]] = blob
    members["index.json"] = json.dumps({"manifests": [{"digest": digest(manifest_bytes)}]}).encode()
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    return members


# ---------------------------------------------------------------- a GitHub App (tests/support/githubapi.py)


APP_ID = 424242
APP_OWNER = "acme"
APP_REPOS = ("private-utils", "private-extra")  # what the apps need; the installation has a third
APP_REQUIREMENTS = "".join(
    f"{name} @ git+ssh://git@github.com/{APP_OWNER}/{name}.git@v1.0\n" for name in APP_REPOS
)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass
class GitHub:
    api: GitHubAPI
    git: GitHubGit
    key: Path  # the App's private key, as downloaded
    bundle: Path  # the system store and the stand-in's CA

    @property
    def key_text(self) -> str:
        return self.key.read_text()

    def yml(self, **extra: object) -> str:
        fields = {"api_url": self.api.url, "git_url": self.git.url, **extra}
        return "github_app:\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items())

    def minted_since(self, count: int) -> list[Token]:
        return self.api.tokens[count:]

    @classmethod
    def start(cls, root: Path) -> GitHub:
        """The App (its key made now) on the API stand-in, the git front end, and a CA bundle of
        the system store and the stand-in's CA; no repository and no installation yet."""
        key = root / "deploykey-test.private-key.pem"
        public = make_app_key(key)
        api = GitHubAPI.start(root / "api")
        api.add_app(APP_ID, public)
        bundle = root / "bundle.pem"
        bundle.write_bytes(SYSTEM_BUNDLE.read_bytes() + api.ca_file.read_bytes())
        return cls(api, GitHubGit.start(api), key, bundle)

    def stop(self) -> None:
        self.git.stop()
        self.api.stop()


@pytest.fixture(scope="module")
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitHub]:
    """The App (its key made now), the API stand-in with the App installed on acme for
    private-utils, private-extra and unrelated (and elsewhere/lib, on which it is not), and the
    git front end serving them; the requirements are written as for github.com, and only
    `api_url` and `git_url` in deploykey.yml (as for GitHub Enterprise Server) point here."""
    github = GitHub.start(tmp_path_factory.mktemp("github"))
    for name in (*APP_REPOS, "unrelated"):
        hello = f'def hello():\n    return "hello from {name}"\n'
        github.git.add_repo(APP_OWNER, name, flit_package(name.replace("-", "_"), "1.0", hello))
    github.git.add_repo("elsewhere", "lib", flit_package("lib", "1.0"))
    github.api.install(APP_ID, APP_OWNER, [*APP_REPOS, "unrelated"])
    yield github
    github.stop()
