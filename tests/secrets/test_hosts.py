"""Pinned host keys: each line checked by fingerprint with ssh-keygen, against the published values."""

from __future__ import annotations

import subprocess

import pytest

from deploykey.secrets import hosts

# Published by GitHub, GitLab and Bitbucket (../shared/reference/security.md).
PUBLISHED = {
    ("github.com", "ssh-ed25519"): "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU",
    ("github.com", "ecdsa-sha2-nistp256"): "SHA256:p2QAMXNIC1TJYWeIOttrVc98/R1BUFWu3/LiyKgUfQM",
    ("github.com", "ssh-rsa"): "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s",
    ("gitlab.com", "ssh-ed25519"): "SHA256:eUXGGm1YGsMAS7vkcx6JOJdOGHPem5gQp4taiCfCLB8",
    ("gitlab.com", "ecdsa-sha2-nistp256"): "SHA256:HbW3g8zUjNSksFbqTiUWPWg2Bq1x8xdGUrliXFzSnUw",
    ("gitlab.com", "ssh-rsa"): "SHA256:ROQFvPThGrW4RuWLoL9tq9I9zJ42fK4XywyRtbOz/EQ",
    ("bitbucket.org", "ssh-ed25519"): "SHA256:ybgmFkzwOSotHTHLJgHO0QN8L0xErw6vd0VhFA9m3SM",
    ("bitbucket.org", "ecdsa-sha2-nistp256"): "SHA256:FC73VB6C4OQLSCrjEayhMp9UMxS97caD/Yyi2bhW/J0",
    ("bitbucket.org", "ssh-rsa"): "SHA256:46OSHA1Rmj8E8ERTC6xkNcmGOw9oFxYr0WF6zWW8l1E",
}
REVOKED = {
    "github.com": "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
    "bitbucket.org": "SHA256:zzXQOXSRBEiUtuE8AikJYKwbHaxvSc0ojez9YXaGp1A",
}


def ssh_keygen_fingerprint(algorithm: str, blob: str) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-lf", "-"],
        input=f"{algorithm} {blob}\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[1]


@pytest.mark.parametrize(("host", "algorithm"), sorted(PUBLISHED))
def test_each_pinned_key_has_its_published_fingerprint(host: str, algorithm: str) -> None:
    [key] = [k for k in hosts.pinned_for(host) if k.algorithm == algorithm]
    assert ssh_keygen_fingerprint(key.algorithm, key.blob) == PUBLISHED[(host, algorithm)]
    assert key.fingerprint == PUBLISHED[(host, algorithm)]


def test_github_keys_also_pinned_for_port_443() -> None:
    assert {k.fingerprint for k in hosts.pinned_for("ssh.github.com", 443)} == {
        v for (h, _), v in PUBLISHED.items() if h == "github.com"
    }


@pytest.mark.parametrize("host", sorted(REVOKED))
def test_rotated_keys_are_revoked(host: str) -> None:
    [key] = hosts.revoked_for(host)
    assert ssh_keygen_fingerprint(key.algorithm, key.blob) == REVOKED[host]
    assert key.line(host).startswith(f"@revoked {host} ssh-rsa ")
    assert REVOKED[host] not in {k.fingerprint for k in hosts.pinned_for(host)}


def test_unknown_host_is_not_pinned() -> None:
    assert not hosts.is_pinned("git.example.com")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("github.com", "expected HOST ALGORITHM BASE64"),
        ("github.com ssh-foo AAAA", "not an ssh host key algorithm"),
        ("github.com ssh-ed25519 !!!", "not valid base64"),
        (
            "github.com ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            "does not hold a ssh-rsa key",
        ),
        ("@cert-authority * ssh-ed25519 AAAA", "marker @cert-authority is not supported"),
    ],
)
def test_bad_lines(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        hosts.parse(line)


def test_host_field_may_be_left_out() -> None:
    key = hosts.parse(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        default_host="git.example.com",
    )
    assert key.patterns == ("git.example.com",)
    assert key.fingerprint == PUBLISHED[("github.com", "ssh-ed25519")]
