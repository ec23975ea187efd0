"""The next build: a cached mirror is untrusted input, in every mode that keeps the build cache.

Build code of build N can write the build cache (Heroku's CACHE_DIR, a BuildKit cache mount, a CI
cache), and build N+1's fetch is the one step that holds a key. Here build N's work on the cache
is planted by the test (the attacks are about the cache's contents; tests/attacks/test_hostile.py shows
that build code reaches the cache): a git dir redirected to one the attacker controls (git obeys
`commondir`: config, refs and objects then come from there, with an upload-pack program of its
own), a moved tag, an added or swapped pack, planted hooks, grafts, alternates and links. Then
build N+1 runs, usually with the key ROTATED (what a user does after a compromise): the planted
program never runs, the new key is copied nowhere, and what gets installed is the host's code.
The modes: Heroku compile (venv), the app hooks (pre_compile), `deploykey fetch` then
`install --fetched` (Docker's two RUNs with a cache mount), and CI `setup` with a cache dir.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import BIN, Build, GeneratedKey, files_with_key, flit_package, make_key
from support.gitserver import GitServer

REPO = "acme/sealed"
HOST_CODE = 'WHO = "host"\n'
TAGGED = "sealed @ git+ssh://git@github.com/acme/sealed.git@v1.0"
BRANCH = "sealed @ git+ssh://git@github.com/acme/sealed.git@main"
MODES = ("compile", "hooks", "fetch", "setup")


@pytest.fixture(scope="module")
def sealed_repo(git_server: GitServer) -> str:
    if not (git_server.root / "repos" / "acme" / "sealed.git").exists():
        git_server.add_repo(REPO, flit_package("sealed", "1.0", HOST_CODE))
    return REPO


def new_key(git_server: GitServer, directory: Path) -> GeneratedKey:
    """A deploy key of acme/sealed: each build that rotates makes one."""
    key = make_key(directory)
    git_server.grant(key.label, key.public, [REPO])
    return key


def venv_of(build: Build, mode: str) -> Path:
    return build.app / ".venv" if mode == "compile" else build.root / "python"


def fresh(build: Build, mode: str) -> None:
    """A new build: a fresh build dir's venv (Heroku, Docker and CI start from a checkout), the
    same build cache."""
    shutil.rmtree(venv_of(build, mode), ignore_errors=True)
    if mode != "compile":
        subprocess.run([sys.executable, "-m", "venv", str(venv_of(build, mode))], check=True)


def run_build(build: Build, mode: str, key: GeneratedKey) -> str:
    """One build in `mode` with `key`; its whole output (it must succeed)."""
    fresh(build, mode)
    venv = venv_of(build, mode)
    pip = [str(venv / "bin" / "pip"), "install", "--no-input", "-r", "requirements.txt"]
    heroku = build.environ(STACK="heroku-24")
    runs: list[subprocess.CompletedProcess[str]] = []

    def step(argv: list[str], env: dict[str, str]) -> None:
        result = subprocess.run(argv, cwd=build.app, env=env, capture_output=True, text=True)
        runs.append(result)
        assert result.returncode == 0, "\n".join(r.stdout + r.stderr for r in runs)

    if mode == "compile":
        build.set_key(key.text)
        runs.append(build.compile(env={**heroku, "DEPLOYKEY_INSTALL": "venv"}))
        assert runs[-1].returncode == 0, runs[-1].stdout + runs[-1].stderr
    elif mode == "hooks":
        build.set_key(key.text)
        if not (build.app / "bin" / "pre_compile").exists():
            step([str(BIN / "deploykey"), "hooks", str(build.app)], build.environ())
        hook = {
            **heroku,
            "ENV_DIR": str(build.env_dir),
            "CACHE_DIR": str(build.cache),
            "BUILD_DIR": str(build.app),
        }
        step([str(build.app / "bin" / "pre_compile")], {**hook, "DEPLOY_KEY": key.text})
        step(pip, hook)
        step([str(build.app / "bin" / "post_compile")], {**hook, "DEPLOY_KEY": ""})
    elif mode == "fetch":
        secrets = build.root / "secrets"
        secrets.mkdir(exist_ok=True)
        (secrets / "DEPLOY_KEY").write_text(key.text)
        kit = [str(BIN / "deploykey")]
        cache = ["--cache-dir", str(build.cache)]
        step([*kit, "fetch", *cache, "--env-dir", str(secrets)], build.environ())
        shutil.rmtree(secrets)  # the secret mount ends with its RUN
        shutil.rmtree(venv)
        step([*kit, "install", "--fetched", *cache, "--venv", str(venv)], build.environ())
    else:
        setup = [str(BIN / "deploykey"), "setup", "--shell", "--cache-dir", str(build.cache)]
        step(setup, {**build.environ(), "DEPLOY_KEY": key.text})
        exports = build.root / "exports"
        exports.write_text(runs[-1].stdout)
        step(["bash", "-c", f". {exports} && {' '.join(pip)}"], build.environ())
    return "".join(r.stdout + r.stderr for r in runs)


def installed(build: Build, mode: str) -> str:
    """The code the build installed: the text of sealed/__init__.py in its venv."""
    [module] = venv_of(build, mode).glob("lib/python3*/site-packages/sealed/__init__.py")
    return module.read_text()


def the_mirror(build: Build) -> Path:
    [mirror] = build.cache.glob("**/acme/sealed.git")
    return mirror


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def attacker_commit(mirror: Path, work: Path) -> str:
    """A commit of build N's own on top of the mirror's v1.0, its objects put in the mirror (as a
    new pack, as `git push` would): what a moved tag or a planted ref points at."""
    clone = work / "attacker-clone"
    if not clone.exists():
        git("clone", "-q", str(mirror), str(clone))
        (clone / "sealed" / "__init__.py").write_text('WHO = "attacker"\n__version__ = "1.0"\n')
        git("add", "-A", cwd=clone)
        git("-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "mine", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone).strip()


def move_tag(mirror: Path, work: Path) -> None:
    commit = attacker_commit(mirror, work)
    git("-C", str(work / "attacker-clone"), "push", "-qf", str(mirror), f"{commit}:refs/tags/v1.0")


UPLOAD_PACK = """#!/bin/sh
# Build N's program: git runs it as the fetch's upload-pack, with the key dir reachable.
touch {marker}
mkdir -p {loot}
env > {loot}/environ
for dir in /dev/shm/deploykey-* "${{TMPDIR:-/tmp}}"/deploykey-*; do
  [ -d "$dir" ] && cp -r "$dir" {loot}/
done
exec git-upload-pack "$@"
"""


def redirect(mirror: Path, work: Path, marker: Path, loot: Path) -> None:
    """`commondir` in the mirror points git at build N's directory: its config (a local URL with
    an upload-pack program of its own), its refs and its objects. The mirror's own `config` is
    left as deploykey wrote it."""
    evil = work / "evil.git"
    shutil.copytree(mirror, evil)
    script = work / "upload-pack"
    script.write_text(UPLOAD_PACK.format(marker=marker, loot=loot))
    script.chmod(0o755)
    (evil / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tbare = true\n"
        f'[remote "origin"]\n\turl = {evil}\n\tuploadpack = {script}\n'
        "\tfetch = +refs/heads/*:refs/heads/*\n\tfetch = +refs/tags/*:refs/tags/*\n"
    )
    (mirror / "commondir").write_text(f"{evil}\n")


def assert_refetched(out: str, mirror: Path, why: str) -> None:
    assert f"discarded the cached mirror {mirror}: {why}" in out, out


@pytest.mark.parametrize(
    ("mode", "rotated"),
    [(mode, True) for mode in MODES] + [("compile", False)],
)
def test_a_redirected_git_dir_runs_nothing_and_the_new_key_is_copied_nowhere(
    build: Build, sealed_repo: str, keys_dir: Path, mode: str, rotated: bool
) -> None:
    (build.app / "requirements.txt").write_text(BRANCH + "\n")  # a branch: always fetched again
    first_key = new_key(build.server, keys_dir)
    run_build(build, mode, first_key)
    mirror, work = the_mirror(build), build.root / "attacker"
    work.mkdir()
    marker, loot = work / "ran", work / "loot"
    redirect(mirror, work, marker, loot)
    key = new_key(build.server, keys_dir) if rotated else first_key
    out = run_build(build, mode, key)
    assert not marker.exists(), out  # build N's program never ran
    assert files_with_key([work, build.app, build.cache, build.home], key.text) == []
    why = "not sealed by this build's key" if rotated else "changed since it was sealed"
    assert_refetched(out, mirror, why)
    assert not (mirror / "commondir").exists()
    assert 'WHO = "host"' in installed(build, mode)


@pytest.mark.parametrize(
    ("mode", "rotated"),
    [(mode, True) for mode in MODES] + [("compile", False)],
)
def test_a_moved_tag_in_the_cache_is_not_believed(
    build: Build, sealed_repo: str, keys_dir: Path, mode: str, rotated: bool
) -> None:
    (build.app / "requirements.txt").write_text(TAGGED + "\n")
    first_key = new_key(build.server, keys_dir)
    run_build(build, mode, first_key)
    mirror = the_mirror(build)
    move_tag(mirror, build.root)
    key = new_key(build.server, keys_dir) if rotated else first_key
    out = run_build(build, mode, key)
    assert 'WHO = "host"' in installed(build, mode), out  # the host's v1.0, not build N's
    why = "not sealed by this build's key" if rotated else "changed since it was sealed"
    assert_refetched(out, mirror, why)
    host = build.server.root / "repos" / "acme" / "sealed.git"
    tagged = ["rev-parse", "v1.0^{commit}"]
    assert git("--git-dir", str(mirror), *tagged) == git("--git-dir", str(host), *tagged)


def add_pack(mirror: Path, work: Path) -> None:
    """A pack of build N's objects beside the mirror's own (no ref changed)."""
    attacker_commit(mirror, work)
    packs = work / "attacker-clone" / ".git" / "objects" / "pack"
    git("-C", str(work / "attacker-clone"), "repack", "-qad")
    for made in packs.glob("pack-*"):
        shutil.copy(made, mirror / "objects" / "pack" / made.name)


def swap_pack(mirror: Path, work: Path) -> None:
    """The mirror's pack replaced, under its own name, with other bytes (git does not check a
    pack's checksum when it reads an object)."""
    add_pack(mirror, work)
    theirs = sorted((work / "attacker-clone" / ".git" / "objects" / "pack").glob("pack-*.pack"))
    ours = [
        p for p in (mirror / "objects" / "pack").glob("pack-*.pack") if p.name != theirs[0].name
    ]
    for suffix in (".pack", ".idx"):
        (mirror / "objects" / "pack" / theirs[0].with_suffix(suffix).name).unlink()
        shutil.copy(theirs[0].with_suffix(suffix), ours[0].with_suffix(suffix))


def hook(mirror: Path, work: Path) -> None:
    (mirror / "hooks").mkdir(exist_ok=True)  # sealed clones copy no template: no hooks/ dir
    (mirror / "hooks" / "reference-transaction").write_text(f"#!/bin/sh\ntouch {work}/ran\n")
    (mirror / "hooks" / "reference-transaction").chmod(0o755)


def grafts(mirror: Path, work: Path) -> None:
    (mirror / "info").mkdir(exist_ok=True)  # nor an info/ dir
    (mirror / "info" / "grafts").write_text(attacker_commit(mirror, work) + "\n")


def alternates(mirror: Path, work: Path) -> None:
    attacker_commit(mirror, work)
    objects = work / "attacker-clone" / ".git" / "objects"
    (mirror / "objects" / "info" / "alternates").write_text(f"{objects}\n")


def linked_objects(mirror: Path, work: Path) -> None:
    """The mirror's objects dir swapped for a link to a copy build N controls."""
    copy = work / "objects"
    shutil.copytree(mirror / "objects", copy)
    shutil.rmtree(mirror / "objects")
    (mirror / "objects").symlink_to(copy)


def linked_ref(mirror: Path, work: Path) -> None:
    work.mkdir(exist_ok=True)
    (work / "ref").write_text(attacker_commit(mirror, work) + "\n")
    (mirror / "refs" / "tags" / "v9.9").symlink_to(work / "ref")


def shallow(mirror: Path, work: Path) -> None:
    """A `shallow` file (git obeys it: the history ends there) naming build N's commit, whose
    objects are added: what a shallow mirror's own file would look like after a fetch."""
    add_pack(mirror, work)
    (mirror / "shallow").write_text(attacker_commit(mirror, work) + "\n")


def promisor_pack(mirror: Path, work: Path) -> None:
    """Build N's pack marked `.promisor` in a partial mirror (git then takes what it lacks as
    promised by the host, and its objects as the host's)."""
    add_pack(mirror, work)
    for made in (mirror / "objects" / "pack").glob("pack-*.pack"):
        made.with_suffix(".promisor").touch()


PLANTED: dict[str, Callable[[Path, Path], None]] = {
    "shallow": shallow,
    "promisor-pack": promisor_pack,
    "added-pack": add_pack,
    "swapped-pack": swap_pack,
    "hook": hook,
    "grafts": grafts,
    "alternates": alternates,
    "linked-objects": linked_objects,
    "linked-ref": linked_ref,
}


@pytest.mark.parametrize("plant", sorted(PLANTED))
def test_a_planted_file_is_detected_and_the_mirror_fetched_again(
    build: Build, sealed_repo: str, keys_dir: Path, plant: str
) -> None:
    """With the same key (no rotation, so only the mirror's contents can tell): anything added,
    swapped or linked in the mirror is detected; the mirror is fetched again and the output says
    so; what gets installed is the host's v1.0."""
    (build.app / "requirements.txt").write_text(TAGGED + "\n")
    key = new_key(build.server, keys_dir)
    run_build(build, "compile", key)
    mirror = the_mirror(build)
    PLANTED[plant](mirror, build.root / "attacker")
    out = run_build(build, "compile", key)
    assert_refetched(out, mirror, "changed since it was sealed")
    assert 'WHO = "host"' in installed(build, "compile")
    assert not (build.root / "attacker" / "ran").exists()
    assert not any(path.is_symlink() for path in mirror.rglob("*"))


def test_an_untouched_cache_is_trusted_with_no_network(
    build: Build, sealed_repo: str, keys_dir: Path
) -> None:
    """The seal costs no round trip: a warm rebuild with the same key asks the host nothing."""
    (build.app / "requirements.txt").write_text(TAGGED + "\n")
    key = new_key(build.server, keys_dir)
    run_build(build, "compile", key)
    asked = len(build.server.log())
    out = run_build(build, "compile", key)
    assert "v1.0 is " in out and "(in the mirror, no network)" in out
    assert "discarded" not in out
    assert len(build.server.log()) == asked


def test_with_an_agent_only_no_cached_mirror_is_trusted(
    build: Build, sealed_repo: str, keys_dir: Path
) -> None:
    """Docker's `--mount=type=ssh`: deploykey never sees the agent's key, so it has no secret to
    seal with: every `deploykey fetch --agent` fetches each cached mirror anew (a moved tag is
    never believed), and says so as a detail, not a warning."""
    key = new_key(build.server, keys_dir)
    (build.app / "requirements.txt").write_text(TAGGED + "\n")
    socket = build.root / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if socket.is_socket():
                break
            time.sleep(0.05)
        env = {**build.environ(), "SSH_AUTH_SOCK": str(socket)}
        subprocess.run(["ssh-add", "-q", str(key.path)], env=env, check=True)
        fetch = [str(BIN / "deploykey"), "fetch", "--agent", "--cache-dir", str(build.cache)]
        first = subprocess.run(fetch, cwd=build.app, env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stdout + first.stderr
        mirror = the_mirror(build)
        assert not mirror.with_name(mirror.name + ".seal").exists()
        move_tag(mirror, build.root)
        second = subprocess.run(fetch, cwd=build.app, env=env, capture_output=True, text=True)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
    assert second.returncode == 0, second.stdout + second.stderr
    said = f"discarded the cached mirror {mirror}: this build has no secret of its own"
    assert said in second.stdout and said not in second.stderr
    host = build.server.root / "repos" / "acme" / "sealed.git"
    commit = git("--git-dir", str(host), "rev-parse", "v1.0^{commit}").strip()
    assert TAGGED.replace("@v1.0", f"@{commit}") in (build.cache / "fetched.json").read_text()


@pytest.mark.parametrize("planted", ["sealed", "sealed/.git", "sealed-extra.git", "not-fetched"])
def test_a_repository_planted_beside_the_mirror_is_removed(
    build: Build, sealed_repo: str, keys_dir: Path, planted: str
) -> None:
    """The installer's URL is rewritten to ROOT/<host>/acme/sealed (no `.git`): git tries
    `sealed/.git` and `sealed` before `sealed.git`, and `insteadOf` also catches `sealed-extra`;
    ROOT/not-fetched must not exist (a private repository that was not fetched fails there).
    Build N plants a repository of its own there, v1.0 moved to its commit; build N+1 removes it,
    says so, and installs the host's v1.0 (`sealed` and `sealed/.git` would otherwise be what is
    installed; `sealed-extra` and not-fetched would be for a dependency only code names)."""
    # Written without `.git`, as pip and uv accept it: git then looks for `sealed/.git` first.
    (build.app / "requirements.txt").write_text(TAGGED.replace(".git@", "@") + "\n")
    key = new_key(build.server, keys_dir)
    run_build(build, "compile", key)
    mirror = the_mirror(build)
    root = build.cache / "deploykey" / "mirrors"
    top = (
        root / "not-fetched" if planted == "not-fetched" else mirror.parent / planted.split("/")[0]
    )
    place = (
        top / "github.com" / "acme" / "sealed.git"
        if planted == "not-fetched"
        else (mirror.parent / planted)
    )
    shutil.copytree(mirror, place)
    move_tag(place, build.root / "attacker")
    out = run_build(build, "compile", key)
    assert 'WHO = "host"' in installed(build, "compile"), out
    assert f"removed {top} from the build cache: " in out, out
    assert not top.exists() and mirror.is_dir()
    assert "discarded" not in out  # the mirror itself was as sealed


# ---------------------------------------------------------------- a fuzzed cache

MARKER_SCRIPT = '#!/bin/sh\ntouch {marker}\nexec git-upload-pack "$@"\n'
# Settings that make git run a program (git-config(1)): each names the planted script.
PROGRAM_KEYS = (
    "core.sshCommand",
    "core.gitProxy",
    "core.askPass",
    "core.fsmonitor",
    "core.alternateRefsCommand",
    "credential.helper",
    "remote.origin.uploadpack",
    "remote.origin.receivepack",
    "uploadpack.packObjectsHook",
    "gpg.program",
    "core.pager",
)
PLANT_FILES = (
    "commondir",
    "objects/info/alternates",
    "objects/info/http-alternates",
    "info/grafts",
    "info/attributes",
    "shallow",
    "config.worktree",
    "gitdir",
    "packed-refs",
    "refs/tags/v1.0",
    "refs/heads/main",
    "hooks/reference-transaction",
    "hooks/post-index-change",
    "FETCH_HEAD",
    "objects/pack/pack-0000000000000000000000000000000000000000.pack",
)
LINK_PATHS = ("objects", "refs", "refs/tags", "config", "hooks", "info", "packed-refs", "HEAD")


@st.composite
def plantings(draw: st.DrawFn) -> list[tuple[str, ...]]:
    """Up to four things build N leaves in the mirror: a file (at a path git reads, with content
    that points elsewhere or names a program), a link, a moved or new ref, a config key that runs
    a program, written into the mirror's config or into a directory `commondir` sends git to."""
    kinds = st.one_of(
        st.tuples(
            st.just("file"),
            st.sampled_from(PLANT_FILES),
            st.sampled_from(["evil-dir", "evil-objects", "commit", "script", "text"]),
        ),
        st.tuples(st.just("link"), st.sampled_from(LINK_PATHS), st.sampled_from(["dir", "file"])),
        st.tuples(st.just("ref"), st.sampled_from(["refs/tags/v1.0", "refs/tags/v2", "refs/x"])),
        st.tuples(
            st.just("config"),
            st.sampled_from(PROGRAM_KEYS + ("url.ext::sh -c touch% MARKER.insteadOf",)),
            st.sampled_from(["mirror", "commondir"]),
        ),
        st.tuples(st.just("seal"), st.sampled_from(["hmac", "key", "remove"])),
    )
    return draw(st.lists(kinds, min_size=1, max_size=4))


def plant(mirror: Path, work: Path, marker: Path, what: tuple[str, ...]) -> None:
    script = work / "program"
    script.write_text(MARKER_SCRIPT.format(marker=marker))
    script.chmod(0o755)
    evil = work / "evil.git"
    if not evil.exists():
        shutil.copytree(mirror, evil, symlinks=True, ignore_dangling_symlinks=True)
    commit = attacker_commit(evil, work)
    contents = {
        "evil-dir": f"{evil}\n",
        "evil-objects": f"{work / 'attacker-clone' / '.git' / 'objects'}\n",
        "commit": f"{commit}\n",
        "script": MARKER_SCRIPT.format(marker=marker),
        "text": "planted\n",
    }
    kind, *rest = what
    if kind == "file":
        path = mirror / rest[0]
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(contents[rest[1]])
        path.chmod(0o755)
    elif kind == "link":
        path = mirror / rest[0]
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        path.symlink_to(evil / rest[0] if rest[1] == "dir" else script)
    elif kind == "ref":
        subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "--git-dir", str(mirror), "fetch", "-q"]
            + [str(work / "attacker-clone"), f"+{commit}:{rest[0]}"],
            capture_output=True,
        )
    elif kind == "config":
        key, value = rest[0].replace("MARKER", str(marker)), str(script)
        if key.startswith("url."):
            key, value = key, "ssh://git@github.com/"
            extra = '[protocol "ext"]\n\tallow = always\n'
        else:
            extra = f'[remote "origin"]\n\turl = {evil}\n' if "uploadpack" in key else ""
        section, _, name = key.rpartition(".")
        head, _, sub = section.partition(".")
        header = f'[{head} "{sub}"]' if sub else f"[{head}]"
        target = mirror if rest[1] == "mirror" else evil
        with (target / "config").open("a") as config:
            config.write(f"{header}\n\t{name} = {value}\n{extra}")
        if rest[1] == "commondir":
            (mirror / "commondir").write_text(f"{evil}\n")
    else:
        seal = mirror.with_name(mirror.name + ".seal")
        lines = seal.read_text().splitlines() if seal.exists() else ["", "", ""]
        if rest[0] == "remove":
            seal.unlink(missing_ok=True)
        elif rest[0] == "key":
            seal.write_text(f"{lines[0]}\nkey 0000000000000000\n{lines[2]}\n")
        else:
            seal.write_text(f"{lines[0]}\n{lines[1]}\nhmac {'0' * 64}\n")


def tree_state(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under root, by its path from root: type and content (links as their target)."""
    state = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            state[relative] = ("link", os.readlink(path))
        elif path.is_dir():
            state[relative] = ("dir", "")
        else:
            state[relative] = (oct(path.lstat().st_mode), path.read_bytes().hex())
    return state


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(planted=plantings())
def test_a_fuzzed_cache_never_runs_a_planted_program(
    build: Build, sealed_repo: str, keys_dir: Path, planted: list[tuple[str, ...]]
) -> None:
    """Random files, links, refs and config keys planted in a warm cache's mirror, then
    `deploykey fetch` with the same key (the seal could check; only the contents can tell): no
    planted program runs, the mirror is used only if it is exactly as sealed (else discarded and
    fetched again, said in the output), and the commit recorded for v1.0 is the host's."""
    (build.app / "requirements.txt").write_text(TAGGED + "\n")
    secrets, pristine = build.root / "secrets", build.root / "pristine"
    kit, env = [str(BIN / "deploykey"), "fetch", "--env-dir", str(secrets)], build.environ()
    if not pristine.exists():
        secrets.mkdir()
        (secrets / "DEPLOY_KEY").write_text(new_key(build.server, keys_dir).text)
        first = subprocess.run([*kit, "--cache-dir", str(pristine)], cwd=build.app, env=env)
        assert first.returncode == 0
    cache, work = build.root / "cache-under-test", build.root / "attacker"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(pristine, cache, symlinks=True)
    work.mkdir()
    [mirror] = cache.glob("**/acme/sealed.git")
    marker = work / "ran"
    for what in planted:
        with contextlib.suppress(OSError):  # a path an earlier planting made a link to a file
            plant(mirror, work, marker, what)
    marker.unlink(missing_ok=True)  # build N's own git may have run it while planting: not ours
    changed = tree_state(mirror) != tree_state(next(pristine.glob("**/acme/sealed.git")))
    result = subprocess.run(
        [*kit, "--cache-dir", str(cache)], cwd=build.app, env=env, capture_output=True, text=True
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert not marker.exists(), out
    discarded = f"discarded the cached mirror {mirror}" in out
    event("fetched again" if discarded else "used as sealed")
    assert discarded or not changed, out
    if not discarded:
        assert "(in the mirror, no network)" in out
    host = build.server.root / "repos" / "acme" / "sealed.git"
    commit = git("--git-dir", str(host), "rev-parse", "v1.0^{commit}").strip()
    assert TAGGED.replace("@v1.0", f"@{commit}") in (cache / "fetched.json").read_text()
    assert not any(path.is_symlink() for path in mirror.rglob("*"))


HISTORY = "acme/history"


@pytest.fixture(scope="module")
def history_repo(git_server: GitServer) -> str:
    """A package whose history holds three 300 kB random files, replaced by a small one at v2.0."""
    if not (git_server.root / "repos" / "acme" / "history.git").exists():
        data = {"data.txt": base64.b64encode(os.urandom(300_000)).decode()}
        git_server.add_repo(HISTORY, {**flit_package("history", "1.0"), **data}, tags=())
        for n in (1, 2):
            data = {"data.txt": base64.b64encode(os.urandom(300_000)).decode()}
            git_server.add_commit(HISTORY, data, f"d{n}")
        git_server.add_commit(HISTORY, {"data.txt": "small\n"}, "v2.0")
    return HISTORY


def test_a_partial_mirror_fetches_history_without_its_files_and_a_warm_build_nothing(
    build: Build, history_repo: str, keys_dir: Path
) -> None:
    """pip installs (the e2e default here): the mirror is partial, the host sends about what
    pip's own `clone --filter=blob:none` would (not the 1.2 MB of history), the install needs no
    network, and the next build sends nothing."""
    from deploykey.fetch import mirrors

    key = make_key(keys_dir)
    build.server.grant(key.label, key.public, [history_repo])
    line = "history @ git+ssh://git@github.com/acme/history.git@v2.0\n"
    (build.app / "requirements.txt").write_text(line)
    before = build.server.sent(history_repo)
    out = run_build(build, "compile", key)
    cold = build.server.sent(history_repo) - before
    host = build.server.root / "repos" / "acme" / "history.git"
    history = sum(p.stat().st_size for p in (host / "objects").rglob("*") if p.is_file())
    assert 0 < cold < history / 8, (cold, history)
    [mirror] = build.cache.glob("**/acme/history.git")
    assert mirrors.is_partial(mirror), out
    out = run_build(build, "compile", key)
    assert "(in the mirror, no network)" in out
    assert build.server.sent(history_repo) - before == cold  # the warm build: not one byte
