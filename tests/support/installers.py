"""The four package managers heroku-buildpack-python uses, and an imitation of how v351 runs them.

- `VERSIONS`: pip, uv, Poetry and Pipenv, each installed once from PyPI into its own venv under
  /var/cache/deploykey-tests/tools/<name>-<version>-<python> (kept between runs; made in a temp
  dir, then renamed).
- `noindex_package()`: a private package whose in-tree PEP 517 backend needs nothing (`requires =
  []`), so that every installer builds it with no package index at all.
- `python_buildpack()`: what heroku-buildpack-python v351's bin/compile does around the install,
  as a bash script: the earlier buildpack's `export` sourced, bin/pre_compile run through
  `sub_env`, the package manager chosen, the v351 install command line with its environment,
  bin/post_compile. Facts from heroku/heroku-buildpack-python at tag v351 (commit b4e7e721dc39),
  cited by file. Where the imitation differs from a real build, it says why next to the line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from conftest import LOCK_TAG
from deploykey.kit.bootstrap import pins

if TYPE_CHECKING:
    from support.gitserver import GitServer

# The newest releases on PyPI when this was written, bumped on purpose: these tests are about the
# installers users get now. heroku-buildpack-python v351 itself pins pip 26.2.1, uv 0.12.5, Poetry
# 2.4.1 and Pipenv 2026.7.1 (requirements/*.txt); what matters here is the same in both (pip's
# GIT_SSH_COMMAND override on --no-input: src/pip/_internal/vcs/git.py at 26.2.1 and in the 26.3
# wheel). Bump them together, on purpose, and rerun tests/installers/test_installers_heroku.py.
VERSIONS = {"pip": "26.3", "uv": "0.13.9", "poetry": "2.5.1", "pipenv": "2026.10.3"}
MANAGERS = ("pip", "uv", "poetry", "pipenv")
TOOLS = Path("/var/cache/deploykey-tests/tools")
# What bin/post_compile's Python bootstraps (lib/deploykey/kit/bootstrap.py) when it is the app's
# Python: served from a wheelhouse, as the installs below have no index.
KIT_DEPENDENCIES = tuple(pin.requirement for pin in pins().values())  # deps.lock's versions
# A proxy nobody listens on: an installer that reaches for an index fails instead of going online.
NO_NETWORK = {
    name: "http://127.0.0.1:9"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
}

# ---------------------------------------------------------------- no ssh after the fetch

SSH_GUARD = """\
#!/bin/sh
# tests/support/installers.py: deploykey runs ssh with its own config (-F); any other ssh is an installer
# reaching for the network after the keys are gone. It is logged and fails, and never connects.
case " $* " in *" -F "*) exec {ssh} "$@" ;; esac
echo "ssh $*" >> {log}
echo "test guard: ssh without deploykey's config: ssh $*" >&2
exit 255
"""


def ssh_guard(scratch: Path) -> Path:
    """A directory to put first on PATH, whose `ssh` lets only deploykey's ssh (-F) through;
    others are written to its `calls` file. Returns the directory."""
    guard = scratch / "ssh-guard"
    guard.mkdir(parents=True, exist_ok=True)
    ssh = shutil.which("ssh", path="/usr/bin:/bin")
    assert ssh is not None
    (guard / "ssh").write_text(SSH_GUARD.format(ssh=ssh, log=guard / "calls"))
    (guard / "ssh").chmod(0o755)
    return guard


def ssh_calls(guard: Path) -> list[str]:
    calls = guard / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


# ---------------------------------------------------------------- the tools, installed once


@dataclass(frozen=True)
class Tools:
    python: str  # the Python the tools, python homes and CI venvs are made from
    wheels: Path  # pip's wheel and the kit's dependencies: find-links for installs with no index
    pip_wheel: Path
    uv: Path
    poetry: Path
    pipenv: Path

    def executable(self, manager: str) -> Path:
        return {"uv": self.uv, "poetry": self.poetry, "pipenv": self.pipenv}[manager]


def _atomic(final: Path, make: Callable[[Path], None]) -> Path:
    """Make `final` in a temp dir beside it, then rename: a run that dies leaves no half-made tool."""
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        make(temp)
        temp.rename(final)
    except OSError:
        if not final.exists():  # not another run's rename winning the race
            raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return final


def _tool_venv(name: str, version: str, python: str) -> Path:
    def make(temp: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(temp)], check=True)
        subprocess.run(
            [str(temp / "bin" / "python"), "-m", "pip", "install", "--quiet"]
            + ["--disable-pip-version-check", "--no-compile", f"{name}=={version}"],
            check=True,
        )
        # Scripts and pyvenv.cfg name the venv's path: name the final one before the rename.
        for path in [temp / "pyvenv.cfg", *(temp / "bin").iterdir()]:
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if str(temp).encode() in data:
                    path.write_bytes(data.replace(str(temp).encode(), str(final).encode()))

    final = TOOLS / f"{name}-{version}-{python}"  # a venv works with the Python it was made from
    return _atomic(final, make)


def pinned(name: str) -> Path:
    """One pinned tool (uv, poetry, pipenv) from PyPI, once per machine: its executable."""
    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    return _tool_venv(name, VERSIONS[name], python) / "bin" / name


def install_tools() -> Tools:
    """Each pinned tool from PyPI, once per machine (the only step that needs the network)."""

    def download(temp: Path) -> None:
        pip = ["pip", "download", "--quiet", "--disable-pip-version-check", "-d", str(temp)]
        subprocess.run(
            [sys.executable, "-m", *pip, "--no-deps", f"pip=={VERSIONS['pip']}"], check=True
        )
        subprocess.run(
            [sys.executable, "-m", *pip, "--only-binary", ":all:", *KIT_DEPENDENCIES], check=True
        )

    python = f"py{sys.version_info[0]}{sys.version_info[1]}"
    wheels = _atomic(TOOLS / f"wheels-{python}-pip-{VERSIONS['pip']}-{LOCK_TAG}", download)
    venvs = {name: _tool_venv(name, VERSIONS[name], python) for name in ("uv", "poetry", "pipenv")}
    return Tools(
        python=sys.executable,
        wheels=wheels,
        pip_wheel=next(wheels.glob(f"pip-{VERSIONS['pip']}-*.whl")),
        uv=venvs["uv"] / "bin" / "uv",
        poetry=venvs["poetry"] / "bin" / "poetry",
        pipenv=venvs["pipenv"] / "bin" / "pipenv",
    )


def venv_with_pip(tools: Tools, path: Path) -> Path:
    """A fresh venv with the pinned pip, installed from its wheel with no index, the way v351
    installs pip (lib/pip.sh: `python <pip wheel>/pip install --isolated ...`)."""
    subprocess.run([tools.python, "-m", "venv", "--without-pip", str(path)], check=True)
    subprocess.run(
        [str(path / "bin" / "python"), f"{tools.pip_wheel}/pip", "install", "--quiet"]
        + ["--isolated", "--disable-pip-version-check", "--no-index", str(tools.pip_wheel)],
        check=True,
    )
    return path


# ---------------------------------------------------------------- the private package and apps


REPO = "acme/noindex-lib"
URL = f"ssh://git@github.com/{REPO}.git"
REQUIREMENT = f"noindex-lib @ git+{URL}@v1.0"
GREETING = "hello from noindex-lib"

BACKEND = '''\
"""A PEP 517 backend that needs no package: the test package builds with no index at all."""
import base64, hashlib, io, os, tarfile, zipfile

DIST, MODULE = "noindex_lib-1.0", "noindex_lib"
METADATA = "Metadata-Version: 2.1\\nName: noindex-lib\\nVersion: 1.0\\nSummary: test package\\n"
WHEEL = "Wheel-Version: 1.0\\nGenerator: backend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
SOURCES = [MODULE + "/__init__.py"]


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_sdist = get_requires_for_build_editable = get_requires_for_build_wheel


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, DIST + ".dist-info")
    os.makedirs(info, exist_ok=True)
    for name, text in (("METADATA", METADATA), ("WHEEL", WHEEL)):
        with open(os.path.join(info, name), "w") as file:
            file.write(text)
    return DIST + ".dist-info"


def _hash(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {path: open(path, "rb").read() for path in SOURCES}
    files[DIST + ".dist-info/METADATA"] = METADATA.encode()
    files[DIST + ".dist-info/WHEEL"] = WHEEL.encode()
    record = DIST + ".dist-info/RECORD"
    lines = [f"{name},sha256={_hash(data)},{len(data)}" for name, data in files.items()]
    files[record] = ("\\n".join(lines + [record + ",,"]) + "\\n").encode()
    name = DIST + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
    return name


def build_sdist(sdist_directory, config_settings=None):
    name = DIST + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as sdist:
        for path in ["pyproject.toml", "backend.py", *SOURCES]:
            sdist.add(path, DIST + "/" + path)
        info = tarfile.TarInfo(DIST + "/PKG-INFO")
        info.size = len(METADATA)
        sdist.addfile(info, io.BytesIO(METADATA.encode()))
    return name
'''


def noindex_package(name: str = "noindex-lib") -> dict[str, str]:
    """The files of acme/noindex-lib: builds with no index (requires = [], an in-tree backend).
    Another `name` makes the same package under that name (its module, and its greeting,
    `hello from NAME`), for an app with two private repositories."""
    files = {
        "pyproject.toml": textwrap.dedent(
            """\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]

            [project]
            name = "noindex-lib"
            version = "1.0"
            description = "test package"
            dependencies = []
            """
        ),
        "backend.py": BACKEND,
        "noindex_lib/__init__.py": f'def hello():\n    return "{GREETING}"\n',
    }
    module = name.replace("-", "_")
    return {
        path.replace("noindex_lib", module): text.replace("noindex-lib", name).replace(
            "noindex_lib", module
        )
        for path, text in files.items()
    }


def serve_noindex(server: GitServer, repo: str = REPO) -> None:
    """acme/noindex-lib (or `repo`, the same package named after it) on the session's git server,
    once (several test modules use it)."""
    if not (server.root / "repos" / f"{repo}.git").is_dir():
        server.add_repo(repo, noindex_package(repo.rpartition("/")[2]))


def manifests(manager: str, repos: tuple[str, ...] = (REPO,)) -> dict[str, str]:
    """What a developer writes for each package manager (their lockfiles are made by the tools),
    naming acme/noindex-lib, or each of `repos` (served by serve_noindex), at v1.0."""
    names = [repo.rpartition("/")[2] for repo in repos]
    urls = [f"ssh://git@github.com/{repo}.git" for repo in repos]
    requirements = [f"{name} @ git+{url}@v1.0" for name, url in zip(names, urls, strict=True)]
    project = textwrap.dedent(
        f"""\
        [project]
        name = "app"
        version = "0.1.0"
        requires-python = ">=3.10"
        dependencies = [{", ".join(f'"{r}"' for r in requirements)}]
        """
    )
    if manager == "pip":
        return {"requirements.txt": "".join(r + "\n" for r in requirements)}
    if manager == "uv":
        return {"pyproject.toml": project}
    if manager == "poetry":
        return {"pyproject.toml": project + "\n[tool.poetry]\npackage-mode = false\n"}
    pipfile = textwrap.dedent(
        """\
        [[source]]
        url = "https://pypi.org/simple"
        verify_ssl = true
        name = "pypi"

        [packages]
        """
    )
    pipfile += "".join(
        f'{name} = {{git = "{url}", ref = "v1.0"}}\n' for name, url in zip(names, urls, strict=True)
    )
    return {"Pipfile": pipfile}


LOCKFILES = {"pip": None, "uv": "uv.lock", "poetry": "poetry.lock", "pipenv": "Pipfile.lock"}
# How a developer makes the lockfile (heroku-buildpack-python only installs from one).
LOCK_COMMANDS = {"uv": "uv lock", "poetry": "poetry lock", "pipenv": "pipenv lock"}
# Each tool's own install command in a CI job (not the buildpack's): into APP/.venv.
CI_COMMANDS = {
    "pip": 'python3 -m venv --without-pip .venv && .venv/bin/python "$PIP_WHEEL/pip" install '
    '--quiet --no-index "$PIP_WHEEL" && .venv/bin/pip install -r requirements.txt',
    "uv": "uv sync --locked",
    "poetry": "poetry sync",
    "pipenv": "pipenv sync",
}


def tool_env(tools: Tools, home: Path, scratch: Path) -> dict[str, str]:
    """A developer's or CI job's environment for the tools: no index, caches in `scratch`, venvs
    in the project (APP/.venv), the pinned tools and the test Python first on PATH."""
    bin_dirs = [Path(tools.python).parent, tools.uv.parent, tools.poetry.parent]
    bin_dirs.append(tools.pipenv.parent)
    links = scratch / "bin"  # only the tools, not their venvs' pythons
    links.mkdir(parents=True, exist_ok=True)
    for tool in (tools.uv, tools.poetry, tools.pipenv):
        if not (links / tool.name).exists():
            (links / tool.name).symlink_to(tool)
    return {
        "PATH": f"{ssh_guard(scratch)}:{links}:{Path(tools.python).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PIP_WHEEL": str(tools.pip_wheel),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tools.wheels),
        "UV_PYTHON": tools.python,
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_CACHE_DIR": str(scratch / "uv-cache"),
        "POETRY_CACHE_DIR": str(scratch / "poetry-cache"),
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "PIPENV_VENV_IN_PROJECT": "1",
        "PIPENV_PYTHON": tools.python,
        "PIPENV_CACHE_DIR": str(scratch / "pipenv-cache"),
        "PIPENV_NOSPIN": "1",
        "PIPENV_VERBOSITY": "-1",
        "XDG_CACHE_HOME": str(scratch / "xdg-cache"),
        "GIT_SSH_COMMAND": "false",  # stray: it must not matter
        **NO_NETWORK,
    }


def with_deploykey(command: str, key_args: str = "", secret: Path | None = None) -> str:
    """A CI job's steps in bash: deploykey's setup, the command, deploykey's cleanup. The key comes
    from `key_args` (--key-file), or from `secret` as DEPLOY_KEY, set for deploykey's two steps
    only, as a CI system sets a secret for the steps that name it."""
    deploykey = str(Path(__file__).resolve().parents[2] / "bin" / "deploykey")
    if secret is not None:
        deploykey = f'DEPLOY_KEY="$(cat {secret})" {deploykey}'
    return textwrap.dedent(
        f"""\
        set -euo pipefail
        exports=$({deploykey} setup --shell {key_args})
        eval "$exports"
        printf '%s\\n' "$exports" > "$SETUP_EXPORTS"
        {{ {command}; }} >&2
        unsets=$({deploykey} cleanup --shell {key_args})
        eval "$unsets"
        env | grep -E '^(GIT_CONFIG|DEPLOYKEY_MIRRORS|POETRY_SYSTEM_GIT)' || true
        """
    )


# ---------------------------------------------------------------- heroku-buildpack-python v351

# What v351's bin/compile does around the install, in its order. Arguments, not variables, carry
# the imitation's own paths, so that they add nothing to the environment the installers see.
V351 = r"""
build_dir=$1 cache_dir=$2 env_dir=$3 export_file=$4 python_home=$5 base_python=$6 pip_wheel=$7
tool=$8 tool_links=$9 tmp_uv_cache=${10}

# The platform sources each earlier buildpack's `export` file before the next bin/compile runs
# (heroku/heroku-buildpack-python v351, lib/checks.sh duplicate_python_buildpack relies on it).
if [[ -n "$export_file" ]]; then
  # shellcheck disable=SC1090
  source "$export_file"
fi

# heroku/heroku-buildpack-python v351, bin/compile
set -eu -o pipefail -o errtrace
BUILD_DIR=$build_dir CACHE_DIR=$cache_dir ENV_DIR=$env_dir
export BUILD_DIR CACHE_DIR ENV_DIR
# bin/compile l.56: the only variables it clears.
unset PYTHONHOME PYTHONPATH
# bin/compile l.77-87 (the C and library search paths are not imitated: git and the installers
# do not read them). python_home is BUILD_DIR/.heroku/python itself here, not /app/.heroku/python
# linked to it (bin/compile l.146-150): the tests do not write to /app.
export PATH="${python_home}/bin:${PATH}" PYTHONUNBUFFERED=1 LANG=en_US.UTF-8

indent() { sed -u 's/^/       /'; }

# vendor/buildpack-stdlib_v8.sh: export_env with the buildpack's WHITELIST and BLACKLIST (never set)
export_env() {
  local env_dir=$1 whitelist=$2 blacklist e
  blacklist="^(PATH|CPATH|CPPATH|LD_PRELOAD|LIBRARY_PATH|LD_LIBRARY_PATH|PYTHONHOME${3:+|$3})$"
  if [[ -d "$env_dir" ]]; then
    # shellcheck disable=SC2045
    for e in $(ls "$env_dir"); do
      echo "$e" | grep -E "$whitelist" | grep -qvE "$blacklist" && export "$e=$(cat "$env_dir/$e")"
      :
    done
  fi
}
# vendor/buildpack-stdlib_v8.sh: a subshell, so nothing the hook exports comes back.
sub_env() { ( export_env "$ENV_DIR" "${WHITELIST:-}" "${BLACKLIST:-}"; "$@" ) }

# lib/hooks.sh: run bin/<hook> if it is a file, in sub_env; its failure fails the build.
run_hook() {
  local script_path="bin/$1"
  if [[ -f "$script_path" ]]; then
    echo "-----> Running bin/$1 hook"
    chmod +x "$script_path"
    if ! sub_env "$script_path" |& indent; then
      echo " !     Error: Failed to run the bin/$1 script." >&2
      exit 1
    fi
  fi
}

cd "$BUILD_DIR"
run_hook pre_compile   # bin/compile l.92: before detection, Python and the installer

# lib/package_manager.sh, package_manager::determine_package_manager: after pre_compile.
managers=()
if [[ -f Pipfile.lock ]]; then
  managers+=(pipenv)
elif [[ -f Pipfile ]]; then
  echo " !     Error: No 'Pipfile.lock' found!" >&2
  exit 1
fi
if [[ -f requirements.txt ]]; then managers+=(pip); fi
if [[ -f poetry.lock ]]; then managers+=(poetry); fi
if [[ -f uv.lock ]]; then managers+=(uv); fi
if (( ${#managers[@]} != 1 )); then
  echo " !     Error: ${#managers[@]} Python package manager files found: ${managers[*]:-none}" >&2
  exit 1
fi
manager=${managers[0]}
echo "-----> Installing dependencies using ${manager}"

# python::install. Not v351's: a venv of the test Python stands in for the full CPython v351
# unpacks into python_home, with no pip, as `python -m venv --without-pip` (lib/poetry.sh) makes.
mkdir -p .heroku
"$base_python" -m venv --without-pip "$python_home"

case "$manager" in
  pip)
    # lib/pip.sh pip::install_pip: pip from a wheel, --isolated (here the pinned wheel itself,
    # with --no-index, instead of "pip==VERSION" from PyPI; setuptools 70.3.0 is not installed:
    # the test package needs none).
    "$python_home/bin/python" "$pip_wheel/pip" install --disable-pip-version-check --isolated \
      --no-cache-dir --no-input --quiet --no-index "$pip_wheel"
    export PIP_DISABLE_PIP_VERSION_CHECK="1"
    # lib/pip.sh pip::install_dependencies: the one config var it reads.
    if [[ -r "${ENV_DIR}/PIP_EXTRA_INDEX_URL" ]]; then
      PIP_EXTRA_INDEX_URL="$(cat "${ENV_DIR}/PIP_EXTRA_INDEX_URL")"
      export PIP_EXTRA_INDEX_URL
    fi
    pip install -r requirements.txt --exists-action=w --no-cache-dir --no-input --progress-bar off \
      "--src=${python_home}/src" |& indent
    ;;
  uv)
    # lib/uv.sh uv::install_uv: the uv binary alone in a directory first on PATH (v351 keeps it in
    # CACHE_DIR/.heroku/python-uv; here a link to the pinned uv, outside the cache).
    uv_dir="$tool_links/python-uv"
    mkdir -p "$uv_dir" && ln -sfn "$tool" "$uv_dir/uv"
    export PATH="${uv_dir}:${PATH}"
    export UV_PROJECT_ENVIRONMENT="${python_home}" UV_NO_MANAGED_PYTHON="1" \
      UV_PYTHON_DOWNLOADS="never" UV_LINK_MODE="hardlink"
    if [[ "$(realpath "$python_home")" == /tmp/* ]]; then
      # v351 sets UV_CACHE_DIR=/tmp/uv-cache here; a per-build directory instead, so that no
      # test run shares uv's cache with another.
      export UV_CACHE_DIR="$tmp_uv_cache"
    fi
    # lib/uv.sh uv::install_dependencies (INSTALL_TEST unset)
    uv sync --locked --no-default-groups --color always --compile-bytecode --no-progress |& indent
    ;;
  poetry)
    # lib/poetry.sh poetry::install_poetry: its own venv, only `poetry` linked onto PATH (v351
    # keeps it in CACHE_DIR/.heroku/python-poetry; here the pinned Poetry's venv, outside it).
    poetry_bin_dir="$tool_links/python-poetry/bin"
    mkdir -p "$poetry_bin_dir" && ln -sfn "$tool" "$poetry_bin_dir/poetry"
    export PATH="${poetry_bin_dir}:${PATH}"
    export POETRY_VIRTUALENVS_CREATE="false" POETRY_VIRTUALENVS_USE_POETRY_PYTHON="true"
    # Not v351's. On Heroku Poetry's venv is made from python_home's full CPython, so Poetry
    # (VIRTUALENVS_CREATE=false) installs into its venv's base Python, which is python_home. Here
    # that base is the test Python, not the python_home venv: VIRTUAL_ENV names python_home.
    export VIRTUAL_ENV="${python_home}"
    # lib/poetry.sh poetry::install_dependencies (INSTALL_TEST unset)
    poetry sync --only main --compile --no-ansi --no-interaction |& indent
    ;;
  pipenv)
    # lib/pipenv.sh pipenv::install_pipenv: v351 installs Pipenv into python_home/pipenv; here
    # the pinned Pipenv's venv, with only `pipenv` linked onto PATH.
    pipenv_bin_dir="$tool_links/pipenv/bin"
    mkdir -p "$pipenv_bin_dir" && ln -sfn "$tool" "$pipenv_bin_dir/pipenv"
    export PATH="${pipenv_bin_dir}:${PATH}"
    export PIPENV_SYSTEM="1" PIPENV_VERBOSITY="-1" VIRTUAL_ENV="${python_home}"
    if [[ -r "${ENV_DIR}/PIP_EXTRA_INDEX_URL" ]]; then
      PIP_EXTRA_INDEX_URL="$(cat "${ENV_DIR}/PIP_EXTRA_INDEX_URL")"
      export PIP_EXTRA_INDEX_URL
    fi
    # lib/pipenv.sh pipenv::install_dependencies (INSTALL_TEST unset)
    PIPENV_NOSPIN="1" PIP_SRC="${python_home}/src" pipenv install --deploy |& indent
    ;;
esac

run_hook post_compile   # bin/compile l.289: after the install; a failed install never gets here
"""


@dataclass(frozen=True)
class Compiled:
    result: subprocess.CompletedProcess[str]
    python_home: Path

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    @property
    def manager(self) -> str | None:
        for line in self.result.stdout.splitlines():
            if line.startswith("-----> Installing dependencies using "):
                return line.rsplit(" ", 1)[1]
        return None

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """Run Python from python_home, with nothing of the build's environment."""
        return subprocess.run(
            [str(self.python_home / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )


def python_buildpack(
    app: Path,
    cache: Path,
    env_dir: Path,
    environ: Mapping[str, str],
    tools: Tools,
    scratch: Path,
    export: Path | None = None,
    timeout: int = 300,
) -> Compiled:
    """heroku-buildpack-python v351's bin/compile around the install (see V351), run on `app` with
    `environ` (HOME included), after an earlier buildpack's `export` file if given. `scratch`
    holds what the imitation needs besides (tool links, uv's /tmp cache): not the app, the cache
    or HOME. Whether the app has uv.lock, poetry.lock, Pipfile.lock or requirements.txt decides
    the manager, as v351 does."""
    python_home = app / ".heroku" / "python"
    scratch.mkdir(parents=True, exist_ok=True)
    found = [m for m in MANAGERS if (app / (LOCKFILES[m] or "requirements.txt")).is_file()]
    tool = str(tools.executable(found[0])) if len(found) == 1 and found[0] != "pip" else ""
    args = [str(app), str(cache), str(env_dir), str(export or ""), str(python_home)]
    args += [tools.python, str(tools.pip_wheel), tool, str(scratch / "tools")]
    args.append(str(scratch / "uv-cache"))
    result = subprocess.run(
        ["bash", "-c", V351, "heroku-buildpack-python-v351", *args],
        env=dict(environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=app,
    )
    return Compiled(result, python_home)


def heroku_environ(base: Mapping[str, str], tools: Tools, scratch: Path) -> dict[str, str]:
    """The environment each buildpack's bin/compile gets, for these tests: Heroku's STACK, no
    index for pip (uv reads no variable for that: the proxy below stops it), no network, a stray
    GIT_SSH_COMMAND, and `ssh_guard` first on PATH, which stops (and logs) any ssh an installer
    starts (pip replaces GIT_SSH_COMMAND with its own `ssh -oBatchMode=yes`)."""
    env = {k: v for k, v in base.items() if not k.startswith("DEPLOYKEY_")}
    env.update(
        PATH=f"{ssh_guard(scratch)}:{base['PATH']}",
        STACK="heroku-24",
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(tools.wheels),  # the kit's own dependencies, for post_compile
        GIT_SSH_COMMAND="false",
        UV_HTTP_RETRIES="0",  # the dead proxy fails at once, not after uv's three retries
        **NO_NETWORK,
    )
    return env
