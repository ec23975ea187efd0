"""Which installer runs, uv or pip, and its cache in the build cache (DEPLOYKEY_INSTALLER).

uv (from PyPI) fetches git dependencies with the git CLI, so the router and the pinned host keys
apply unchanged, several at once, and caches built wheels and checkouts by commit. The kit keeps
its cache in the platform's build cache (Heroku CACHE_DIR, a CNB cache layer, a Docker cache
mount), and pins every checked requirement to the commit its tag names now (uv `--override`), so
a warm build neither clones nor builds again, nor even fetches: a dependency is fetched once per
commit. The cache is scanned like the app after every build; it never holds key material (git
keeps no credentials, only the repository URLs and code).

`auto` (the default): uv on PATH, or cached from an earlier build, or installed into the build
cache from PyPI; pip when that fails, when the requirements have `-e git+...` lines (uv installs
editables from local paths only), or for `--user`.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykey import output
from deploykey.errors import UserError

UV_REQUIREMENT = "uv>=0.4,<1"
# pip's settings with a uv equivalent: the user's index configuration applies to both.
PIP_TO_UV = {
    "PIP_INDEX_URL": "UV_INDEX_URL",
    "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS": "UV_FIND_LINKS",
    "PIP_TRUSTED_HOST": "UV_INSECURE_HOST",
}


@dataclass(frozen=True)
class Installer:
    name: str  # "uv" or "pip"
    cache: Path  # the kit's part of the build cache (or a temp dir, removed after the build)
    uv: Path | None = None

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The child environment with the installer's own settings."""
        found = dict(env)
        if self.name == "uv":
            for pip_name, uv_name in PIP_TO_UV.items():
                if pip_name in found and uv_name not in found:
                    found[uv_name] = found[pip_name]
            found.update(
                UV_CACHE_DIR=str(self.cache / "uv-cache"),
                UV_LINK_MODE="copy",  # the cache and the app are on different filesystems
                UV_NO_PROGRESS="1",
                UV_PYTHON_DOWNLOADS="never",
                # A private repository has no public API answer: ask git, not api.github.com.
                UV_NO_GITHUB_FAST_PATH="1",
            )
            # uv trusts its bundled roots unless told otherwise; pip trusts the system's. Behind
            # a TLS-intercepting proxy whose CA is in the system store, only the system's work.
            # (UV_SYSTEM_CERTS since uv 0.11, 2026-03; UV_NATIVE_TLS, its older name, for older uv.)
            found.setdefault("UV_SYSTEM_CERTS", "true")
            found.setdefault("UV_NATIVE_TLS", "true")
        return found

    def venv_argv(self, where: Path) -> list[str]:
        if self.uv is not None:
            return [str(self.uv), "venv", "--quiet", "--python", sys.executable, str(where)]
        return [sys.executable, "-m", "venv", str(where)]

    def install_argv(
        self,
        python: Path,
        requirements: Path,
        src: Path | None,
        extra: Sequence[str] = (),
        overrides: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        if self.uv is not None:
            argv = [
                str(self.uv),
                "pip",
                "install",
                "--python",
                str(python),
                "--requirement",
                str(requirements),
            ]
            # uv reads no environment variable for this one
            if (env or {}).get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
                argv.append("--no-index")
            return argv + (["--override", str(overrides)] if overrides else []) + list(extra)
        argv = [
            str(python),
            "-m",
            "pip",
            "install",
            "--requirement",
            str(requirements),
            "--no-input",
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
            "--exists-action",
            "w",
            "--cache-dir",
            str(self.cache / "pip-cache"),
            *extra,
        ]
        return argv + (["--src", str(src)] if src is not None else [])


def choose(
    setting: str, cache: Path, editable_vcs: Sequence[str] = (), user: bool = False
) -> Installer:
    """The installer DEPLOYKEY_INSTALLER asks for, uv bootstrapped into `cache` when missing."""
    if setting == "pip":
        return Installer("pip", cache)
    if editable_vcs or user:
        why = f"`-e` VCS requirements ({', '.join(editable_vcs)})" if editable_vcs else "--user"
        if setting == "uv":
            output.warn(f"using pip, not uv: uv does not install {why}")
        return Installer("pip", cache)
    uv = find_uv(cache)
    if uv is None:
        try:
            uv = bootstrap_uv(cache)
        except UserError as error:
            if setting == "uv":
                raise
            output.warn(f"uv could not be installed ({error.why}); installing with pip")
            return Installer("pip", cache)
    return Installer("uv", cache, uv)


def find_uv(cache: Path) -> Path | None:
    on_path = shutil.which("uv")
    if on_path:
        return Path(on_path)
    cached = cache / "uv" / "bin" / "uv"
    return cached if cached.is_file() and os.access(cached, os.X_OK) else None


def bootstrap_uv(cache: Path) -> Path:
    """Install uv from PyPI into the build cache (once; later builds find it there)."""
    from deploykey import bootstrap

    target = cache / "uv"
    output.detail(f"installing uv into {target} (once: the build cache keeps it)")
    cache.mkdir(parents=True, exist_ok=True)
    bootstrap.pip_install(target, [UV_REQUIREMENT])
    binary = target / "bin" / "uv"
    if not binary.is_file():
        shutil.rmtree(target, ignore_errors=True)
        raise UserError(
            "deps::bootstrap",
            packages=UV_REQUIREMENT,
            detail=f"pip installed {UV_REQUIREMENT} without a bin/uv",
            python=sys.executable,
        )
    return binary
