"""The environment a child process gets: an allow-list, never the kit's own environment wholesale.

DEPLOY_KEY* (which a Heroku app hook or a CI system may have exported), a stray SSH_AUTH_SOCK or
GIT_SSH_COMMAND, and the kit's own import path never reach git, ssh or pip, nor the setup.py of a
package pip builds. Standard library only: the bootstrap uses it before `sh` is importable.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

# Passed through unchanged: what a child needs to find programs, write temp files, print text,
# verify TLS and reach an index through a proxy.
PASSED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TERM",
        "STACK",
        "SOURCE_DATE_EPOCH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
    }
)
# Locale settings, and the user's own pip, uv, Poetry and Pipenv settings (index URLs,
# certificates, timeouts): the package managers deploykey runs read them.
INSTALLER_PREFIXES = ("PIP_", "UV_", "POETRY_", "PIPENV_")
PASSED_PREFIXES = ("LC_", *INSTALLER_PREFIXES)
# Never passed, whatever the lists above say:
# - DEPLOY_KEY*: the key itself; every package's build code run by pip could read it.
# Everything else is dropped by default, notably:
# - SSH_AUTH_SOCK: an agent's keys would be offered before the deploy key (IdentityAgent none
#   guards ssh as well).
# - GIT_SSH, GIT_SSH_COMMAND, GIT_CONFIG_*: would override the ssh command the kit sets.
# - PYTHONPATH, PYTHONHOME, VIRTUAL_ENV: the kit's own import path must not leak into pip.
NEVER_PREFIX = "DEPLOY_KEY"


def child_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    source = os.environ if base is None else base
    env = {
        name: value
        for name, value in source.items()
        if (name in PASSED or name.startswith(PASSED_PREFIXES))
        and not name.startswith(NEVER_PREFIX)
    }
    # git must never ask for a password on a terminal the build does not have.
    env["GIT_TERMINAL_PROMPT"] = "0"
    for name, value in (extra or {}).items():
        if name.startswith(NEVER_PREFIX):
            raise ValueError(f"refusing to pass {name} to a child process")
        env[name] = value
    return env


def secret_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """child_env for a program that runs while a key, a token or the App's key is reachable (git,
    ssh, ssh-agent, ssh-add, ssh-keygen, openssl, and what they start: the router's sh, tr): its
    PATH holds only the directories build code cannot have written (see trusted_path)."""
    env = child_env(extra)
    env["PATH"] = trusted_path(env.get("PATH", os.defpath))
    return env


def trusted_path(path: str) -> str:
    """PATH less every directory this user could change the programs of: one it can write, or
    swap for another (a writable directory above it), and relative entries (the app dir). On a
    CI runner or a laptop HOME outlives the build, and PATH often starts in it (~/.local/bin):
    build code would put a `git` there for the next build's fetch. Root writes everything, so as
    root PATH stays as it is (SECURITY.md: a build that runs as root is out of reach)."""
    if os.geteuid() == 0:
        return path
    kept = [entry for entry in path.split(os.pathsep) if Path(entry).is_absolute()]
    return os.pathsep.join(entry for entry in kept if not writable(Path(entry)))


def writable(directory: Path) -> bool:
    """Whether this user could change what `directory` holds, as written and as resolved: write
    it, or rename it or a directory above it away (not in a sticky directory such as /tmp, where
    only the owner of an entry may rename it)."""
    for path in dict.fromkeys([Path(os.path.normpath(directory)), directory.resolve()]):
        if os.access(path, os.W_OK):
            return True
        for child, parent in zip([path, *path.parents], path.parents, strict=False):
            if os.access(parent, os.W_OK) and not _sticky_for(parent, child):
                return True
    return False


def _sticky_for(parent: Path, child: Path) -> bool:
    """A sticky `parent` keeps this user from renaming `child`, which it does not own."""
    try:
        sticky = bool(parent.stat().st_mode & stat.S_ISVTX)
        return sticky and child.lstat().st_uid != os.geteuid()
    except OSError:
        return False
