"""The environment a child process gets: an allow-list, never the kit's own environment wholesale.

DEPLOY_KEY* (which a Heroku app hook or a CI system may have exported), a stray SSH_AUTH_SOCK or
GIT_SSH_COMMAND, and the kit's own import path never reach git, ssh or pip, nor the setup.py of a
package pip builds. Standard library only: the bootstrap uses it before `sh` is importable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

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
