"""Child processes get an allow-listed environment: never the key, never another ssh route."""

from __future__ import annotations

import pytest

from deploykey.core.childenv import child_env


def test_allow_list() -> None:
    env = child_env(
        base={
            "PATH": "/bin",
            "HOME": "/home/x",
            "LC_ALL": "C",
            "PIP_INDEX_URL": "https://pypi.example/simple",
            "DEPLOY_KEY": "secret",
            "DEPLOY_KEY_BILLING": "secret",
            "SSH_AUTH_SOCK": "/tmp/agent",
            "GIT_SSH_COMMAND": "ssh -i other",
            "GIT_CONFIG_COUNT": "1",
            "PYTHONPATH": "/kit/lib",
            "AWS_SECRET_ACCESS_KEY": "x",
        }
    )
    assert env == {
        "PATH": "/bin",
        "HOME": "/home/x",
        "LC_ALL": "C",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "GIT_TERMINAL_PROMPT": "0",
    }


def test_refuses_to_pass_a_key() -> None:
    with pytest.raises(ValueError, match="DEPLOY_KEY"):
        child_env({"DEPLOY_KEY": "x"}, base={})
