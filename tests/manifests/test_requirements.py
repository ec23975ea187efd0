"""Reading requirements files for git-over-ssh dependencies, as pip reads them."""

from __future__ import annotations

from pathlib import Path

from deploykey.manifests import requirements


def parse(tmp_path: Path, text: str, name: str = "requirements.txt") -> requirements.Requirements:
    (tmp_path / name).write_text(text)
    return requirements.read(tmp_path, name)


def test_forms_pip_accepts(tmp_path: Path) -> None:
    found = parse(
        tmp_path,
        "flask==3.0  # web\n"
        "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0\n"
        "-e git+ssh://git@gitlab.com/group/sub/lib.git@main#egg=lib\n"
        "git+ssh://github.com/acme/nouser.git\n"
        "other @ git+ssh://git@git.example.com:2222/team/other.git@abc123 ; python_version >= '3.8'\n"
        "# git+ssh://git@github.com/acme/commented.git\n"
        "split @ \\\n  git+ssh://git@github.com/acme/split.git@v2\n",
    )
    assert found.problems == []
    assert [(r.host, r.port, r.user, r.repo, r.ref, r.line) for r in found.git] == [
        ("github.com", 22, "git", "acme/private-utils", "v1.0", 2),
        ("gitlab.com", 22, "git", "group/sub/lib", "main", 3),
        ("github.com", 22, None, "acme/nouser", None, 4),
        ("git.example.com", 2222, "git", "team/other", "abc123", 5),
        ("github.com", 22, "git", "acme/split", "v2", 7),
    ]
    assert found.hosts == [("git.example.com", 2222), ("github.com", 22), ("gitlab.com", 22)]


def test_includes_are_followed_once(tmp_path: Path) -> None:
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "base.txt").write_text(
        "-r ../requirements.txt\nx @ git+ssh://git@github.com/acme/x.git\n"
    )
    found = parse(tmp_path, "-r reqs/base.txt\n--constraint=reqs/none.txt\n")
    assert [r.repo for r in found.git] == ["acme/x"]
    assert [r.file for r in found.git] == ["reqs/base.txt"]
    assert found.files == ["requirements.txt", "reqs/base.txt"]


def test_scp_like_typo_is_reported_with_the_fix(tmp_path: Path) -> None:
    found = parse(
        tmp_path,
        "a @ git+ssh://git@github.com:acme/a.git@v1.0\ngit+git@github.com:acme/b.git@v2#egg=b\n",
    )
    assert found.git == []
    assert [p.facts["fixed"] for p in found.problems] == [
        "git+ssh://git@github.com/acme/a.git@v1.0",
        "git+ssh://git@github.com/acme/b.git@v2",
    ]
    first = found.problems[0]
    assert (
        first.title
        == "requirements.txt:1: `git+ssh://git@github.com:acme/a.git@v1.0` uses a colon after the host"
    )
    assert "reads `acme` as a port number" in first.why


def test_an_ssh_option_as_user_name_is_a_problem_not_a_requirement(tmp_path: Path) -> None:
    found = parse(
        tmp_path,
        "a @ git+ssh://-oProxyCommand=x@github.com/acme/a.git@v1\n"
        "b @ git+ssh://git@github.com/acme/b.git\n"
        "c @ git+ssh://org-1.x_y@example.com/c.git\n",
    )
    assert [req.user for req in found.git] == ["git", "org-1.x_y"]
    [problem] = found.problems
    assert problem.slug == "requirements::ssh-user"
    assert problem.title == "requirements.txt:1: `-oProxyCommand=x` is not a valid ssh user name"
    assert problem.facts["fixed"] == "git+ssh://git@github.com/acme/a.git@v1"


def test_https_and_index_options_are_not_ssh(tmp_path: Path) -> None:
    found = parse(
        tmp_path, "--index-url https://pypi.org/simple\ngit+https://github.com/pallets/click\n"
    )
    assert not found.uses_ssh


def test_detect_looks_in_the_usual_places(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "prod.txt").write_text("hg+ssh://hg@example.com/repo#egg=x\n")
    files, found = requirements.detect(tmp_path)
    assert files == ["requirements/prod.txt"]
    assert found.uses_ssh and found.other_ssh == ["requirements/prod.txt:1"]


def test_parsers_and_the_scan_are_linear_in_a_long_line(tmp_path: Path, keys_dir: Path) -> None:
    """Runs that the patterns used to try at every character (quadratic): a 1 MB line of spaces
    in requirements.txt (bin/detect took 43 s on 100 KB; 1 MB would take over an hour), a 1 MB
    run of letters in it (the scp-like URL check), and in a .git-credentials file (the scan's URL
    credentials). Not a speed goal: the timeout tells a hang from an answer, by far more than the
    machine's noise."""
    import subprocess

    from conftest import BIN, make_key

    app = tmp_path / "app"
    app.mkdir()
    run = 1_000_000
    (app / "requirements.txt").write_text(" " * run + "\n" + "a" * run + "\nrequests\n")
    detect = subprocess.run([str(BIN / "detect"), str(app)], capture_output=True, timeout=120)
    assert detect.returncode == 1, detect.stderr  # no private git dependency: not detected
    key = make_key(keys_dir)
    (app / ".git-credentials").write_text("a" * run + "\n")
    scanned = subprocess.run(
        [str(BIN / "deploykey"), "scan", str(app), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scanned.returncode == 0, scanned.stderr
    assert "no key material found" in scanned.stdout
