"""App directories and keys owned as a platform leaves them (another user, other modes)."""

from __future__ import annotations

from pathlib import Path

from conftest import REQUIREMENT, GeneratedKey
from support.gitserver import GitServer
from support.nonroot import NonRoot


def app_dir(nonroot: NonRoot, server: GitServer) -> Path:
    app = nonroot.mkdir("app")
    nonroot.write("app/requirements.txt", (REQUIREMENT + "\n").encode())
    nonroot.write("app/deploykey.yml", server.deploykey_yml().encode())
    return app


def own_key(nonroot: NonRoot, key: GeneratedKey) -> Path:
    """The key as `--mount=type=secret,uid=<uid>` mounts it: the user's own, mode 0400."""
    nonroot.mkdir("secrets", mode=0o755)
    return nonroot.write("secrets/deploy_key", key.text.encode(), owner=nonroot.uid, mode=0o400)
