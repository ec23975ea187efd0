"""A GitHub Enterprise Server stand-in's settings: the requirements and deploykey.yml it reads."""

from __future__ import annotations

from conftest import APP_OWNER, APP_REPOS, GitHub

HOST = "localhost"


REQUIREMENTS = "".join(
    f"{name} @ git+ssh://git@{HOST}/{APP_OWNER}/{name}.git@v1.0\n" for name in APP_REPOS
)


def enterprise_yml(github: GitHub, **extra: object) -> str:
    base = github.git.enterprise_url
    fields = {"host": HOST, "api_url": f"{base}/api/v3", "git_url": base, **extra}
    return "github_app:\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items())
