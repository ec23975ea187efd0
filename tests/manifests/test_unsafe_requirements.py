"""Bad requirement input is a clear error (issue 22): a repository path holding `..` or a part
that looks like an option, or a ref like one, refused when the manifests are read, naming the file
and line, in every manifest kind that yields git requirements; and a tag that names a blob or a
tree, found by the fetch instead of failing later inside the installer. Never exit 3."""

from __future__ import annotations

import os
import pwd
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import Build, GeneratedKey, flit_package, snapshot
from deploykey import manifests

SHA = "0123456789abcdef0123456789abcdef01234567"
BAD = "ssh://git@github.com/acme/../x.git"

# One file of each kind that yields git requirements: (name, text, line, url as read, value).
KINDS = [
    (
        "requirements.txt",
        "ok @ git+ssh://git@github.com/acme/ok.git@v1\n"
        "x @ git+ssh://git@github.com/acme/--upload-pack=touch /tmp/x@v1\n",
        2,
        "git+ssh://git@github.com/acme/--upload-pack=touch",
        "acme/--upload-pack=touch",
    ),
    (
        "pyproject.toml",
        '[project]\nname = "app"\nversion = "1"\n'
        'dependencies = [\n  "x @ git+ssh://git@github.com/acme/../x.git@v1",\n]\n',
        5,
        "git+ssh://git@github.com/acme/../x.git@v1",
        "acme/../x",
    ),
    (
        "pyproject.toml",
        "[tool.poetry.dependencies]\n"
        'x = { git = "ssh://git@github.com/acme/-x.git", tag = "v1" }\n',
        2,
        "ssh://git@github.com/acme/-x.git",
        "acme/-x",
    ),
    (
        "uv.lock",
        'version = 1\n\n[[package]]\nname = "x"\nversion = "1"\n'
        f'source = {{ git = "{BAD}?tag=v1#{SHA}" }}\n',
        6,
        BAD,
        "acme/../x",
    ),
    (
        "poetry.lock",
        '[[package]]\nname = "x"\nversion = "1"\n\n[package.source]\ntype = "git"\n'
        f'url = "{BAD}"\nreference = "v1"\nresolved_reference = "{SHA}"\n',
        7,
        BAD,
        "acme/../x",
    ),
    (
        "Pipfile",
        f'[packages]\nx = {{git = "{BAD}", ref = "v1"}}\n',
        2,
        BAD,
        "acme/../x",
    ),
    (
        "Pipfile.lock",
        '{"default": {"x": {"git": "' + BAD + '", "ref": "' + SHA + '"}}}\n',
        1,
        BAD,
        "acme/../x",
    ),
    (
        "pylock.toml",
        'lock-version = "1.0"\n\n[[packages]]\nname = "x"\n\n[packages.vcs]\ntype = "git"\n'
        f'url = "{BAD}"\ncommit-id = "{SHA}"\n',
        8,
        BAD,
        "acme/../x",
    ),
    (
        "setup.cfg",
        "[options]\ninstall_requires =\n    x @ git+ssh://git@github.com/acme/../x.git@v1\n",
        3,
        "git+ssh://git@github.com/acme/../x.git@v1",
        "acme/../x",
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "line", "url", "value"),
    KINDS,
    ids=[f"{k[0]}-{i}" for i, k in enumerate(KINDS)],
)
def test_an_unsafe_repository_path_is_refused_in_every_manifest(
    tmp_path: Path, name: str, text: str, line: int, url: str, value: str
) -> None:
    (tmp_path / name).write_text(text)
    found = manifests.read_all(tmp_path)
    assert [req.repo for req in found.git] in ([], ["acme/ok"])
    [problem] = found.problems
    assert problem.slug == "requirements::unsafe"
    assert problem.title == (
        f"{name}:{line}: the repository path `{value}` in `{url}` is not one deploykey fetches"
    )


@pytest.mark.parametrize("ref", ["-x", "--upload-pack=touch", "v1..v2"])
def test_an_option_or_dots_as_ref_is_refused(tmp_path: Path, ref: str) -> None:
    (tmp_path / "requirements.txt").write_text(
        f"x @ git+ssh://git@github.com/acme/x.git@{ref}\n"
        f"y @ git+https://github.com/acme/y.git@{ref}\n"
    )
    found = manifests.read_all(tmp_path)
    assert found.git == [] and found.https == []
    assert [p.title for p in found.problems] == [
        f"requirements.txt:1: the ref `{ref}` in `git+ssh://git@github.com/acme/x.git@{ref}` is "
        "not one deploykey fetches",
        f"requirements.txt:2: the ref `{ref}` in `git+https://github.com/acme/y.git@{ref}` is "
        "not one deploykey fetches",
    ]


def test_compile_refuses_an_unsafe_path_before_any_git(
    build: Build, utils_key: GeneratedKey
) -> None:
    """Exit 1 with the file and line, not exit 3 with a ValueError; nothing fetched or written."""
    (build.app / "requirements.txt").write_text(
        "x @ git+ssh://git@github.com/acme/--upload-pack=touch /tmp/x@v1.0\n"
    )
    build.set_key(utils_key.text)
    state = snapshot(build.app, build.cache)
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert (
        " !     requirements.txt:1: the repository path `acme/--upload-pack=touch` in "
        "`git+ssh://git@github.com/acme/--upload-pack=touch` is not one deploykey fetches"
    ) in result.stderr
    assert "(requirements::unsafe: README.md#requirements-unsafe)" in result.stderr
    assert "Traceback" not in out and "ValueError" not in out and "Fetching" not in out
    assert snapshot(build.app, build.cache) == state


def test_a_tag_naming_a_blob_is_a_clear_error(build: Build, utils_key: GeneratedKey) -> None:
    """Found by the fetch (`<ref>^{commit}` must resolve), before any installer runs."""
    server = build.server
    bare = server.root / "repos" / "acme" / "blobtag.git"
    if not bare.exists():
        server.add_repo("acme/blobtag", flit_package("blobtag", "1.0"))
        git = ["git", "--git-dir", str(bare)]
        blob = subprocess.run(
            [*git, "hash-object", "-w", "--stdin"],
            input="not a commit\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        tree = subprocess.run(
            [*git, "rev-parse", "main^{tree}"], capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run([*git, "tag", "blob-tag", blob], check=True)
        subprocess.run([*git, "tag", "-a", "-m", "tree", "tree-tag", tree], check=True)
        user = pwd.getpwnam("git")
        for path in [bare, *bare.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)
    server.grant(utils_key.label, utils_key.public, ["acme/blobtag"])
    build.set_key(utils_key.text)
    (build.app / "requirements.txt").write_text(
        textwrap.dedent(
            """\
            blobtag @ git+ssh://git@github.com/acme/blobtag.git@blob-tag
            blobtag @ git+ssh://git@github.com/acme/blobtag.git@tree-tag
            """
        )
    )
    result = build.compile()
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    blob_sha = subprocess.run(
        ["git", "--git-dir", str(bare), "rev-parse", "blob-tag"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert (
        f"requirements.txt:1 github.com/acme/blobtag @ blob-tag: requirements.txt:1: `blob-tag` "
        f"of github.com/acme/blobtag names a blob, not a commit. An installer checks out a "
        f"commit; at github.com/acme/blobtag, `blob-tag` is the blob {blob_sha}, so the install "
        "would fail later, inside the installer. Fix: Name a tag or branch that points at a "
        "commit, or the full 40-character commit, in requirements.txt:1."
    ) in result.stderr
    assert "`tree-tag` of github.com/acme/blobtag names a tree, not a commit" in result.stderr
    assert "(doctor::failed: README.md#doctor-failed)" in result.stderr
    assert "Installing" not in out and "Traceback" not in out
