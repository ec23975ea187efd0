"""Commands for a developer's machine or a CI job: `deploykey doctor`.

The doctor answers "will this build be able to fetch its private dependencies?" without building:
for every private requirement, which key and host it uses, whether the host key verifies, and
whether the repository and ref are readable, each failure in plain words with its fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploykey import build
from deploykey.core import output, sources
from deploykey.core.errors import UserError
from deploykey.installers import install
from deploykey.secrets import config


def env_source(app_dir: str, env_dir: str | None) -> str | None:
    """The env dir or .env file the doctor reads: the one given, $ENV_DIR, else APP_DIR/.env."""
    app = Path(app_dir).resolve()
    return (
        env_dir
        or os.environ.get("ENV_DIR")
        or (str(app / ".env") if (app / ".env").is_file() else None)
    )


def doctor(app_dir: str, env_dir: str | None) -> int:
    app = Path(app_dir).resolve()
    source = env_source(app_dir, env_dir)
    if source is None:
        raise UserError("env::missing", path=app / ".env")
    env = sources.read(source)
    settings = config.load(app, env)
    output.step(f"deploykey doctor: {app}")
    plan = build.plan(
        app, None, env, settings, target=install.Target("off", "doctor installs nothing")
    )
    build.checked(plan)
    return 0
