"""Docker/OCI builds for real (buildah), `deploykey install`, `setup --shell`/`cleanup`, `scan-image`."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import (
    APP_ID,
    APP_OWNER,
    APP_REPOS,
    APP_REQUIREMENTS,
    BIN,
    FLIT,
    KIT,
    KIT_PINS,
    Build,
    GeneratedKey,
    GitHub,
    download_wheels,
    files_with_key,
    flit_package,
    image_members,
    key_dirs,
    key_fragments,
    make_key,
    tar_bytes,
    text_has_key,
)
from support import engine as engines
from support import images
from support.gitserver import GitServer

# The kit's own dependencies, and uv, which the kit installs into the cache mount.
KIT_DEPS = (*KIT_PINS, "uv")


@pytest.fixture(scope="session")
def engine(docker_engine: engines.Engine) -> engines.Engine:
    return docker_engine


@pytest.fixture(scope="session")
def base_image() -> str:
    """The same base image for buildah (daemonless, OCI archives)."""
    return images.ensure_base_image()


@pytest.fixture(scope="session")
def image_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything pip needs inside the image build, offline: flit_core and the kit's own
    dependencies, for the base image's Python (3.11, x86_64)."""
    directory = tmp_path_factory.mktemp("image-wheels")
    download_wheels(directory, FLIT, *KIT_DEPS, cp311=True)
    return directory


@pytest.fixture
def context(tmp_path: Path, git_server: GitServer, image_wheels: Path) -> Path:
    """examples/docker as a build context, with the kit (deploykey.pyz), the wheels, and a
    deploykey.yml that points github.com at the local git server."""
    directory = tmp_path / "context"
    shutil.copytree(
        KIT / "examples" / "docker", directory, ignore=shutil.ignore_patterns("deploykey.pyz")
    )
    shutil.copytree(image_wheels, directory / "wheels")
    offline_wheels(directory)
    (directory / "deploykey.yml").write_text(git_server.deploykey_yml())
    result = subprocess.run(
        [str(BIN / "deploykey"), "pyz", str(directory / "deploykey.pyz")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return directory


OFFLINE = ("--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/src/wheels")


def offline_wheels(context: Path) -> None:
    """The wheelhouse the offline builds install from (OFFLINE), copied in before the fetch, which
    sees only the manifests (as a user's builder reaches PyPI instead: nothing to copy)."""
    for name in ("Dockerfile", "Dockerfile.ssh"):
        path = context / name
        path.write_text(
            path.read_text().replace("WORKDIR /src\n", "WORKDIR /src\nCOPY wheels wheels\n", 1)
        )


def scan_image(archive: Path, key: GeneratedKey) -> subprocess.CompletedProcess[str]:
    """`deploykey scan-image ARCHIVE --key-file KEY`."""
    return subprocess.run(
        [str(BIN / "deploykey"), "scan-image", str(archive), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
    )


def places_with_key(found: Iterator[tuple[str, bytes]], key: GeneratedKey) -> list[str]:
    return places_with(found, key.text)


def places_with(found: Iterator[tuple[str, bytes]], key_text: str, *also: str) -> list[str]:
    """The test's own search (not deploykey's scanner): the key's lines, also with newlines
    escaped or removed, and each of `also` (a token) as it is, in each (where, bytes)."""
    fragments = key_fragments(key_text) + [text.encode() for text in also]
    places = []
    for where, data in found:
        flat = data.replace(b"\\n", b"").replace(b"\n", b"")
        if any(f in data or f in flat for f in fragments):
            places.append(where)
    return places


def assert_image_clean(engine: engines.Engine, tag: str, archive: Path, key: GeneratedKey) -> None:
    """deploykey scan-image says clean about `docker save`, and so does the test's own read of
    every layer, the config, the manifest and `docker history --no-trunc`."""
    engine.save(tag, archive)
    result = scan_image(archive, key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no key material found" in result.stdout
    assert places_with_key(engines.everything_in(archive), key) == []
    history = [(f"history {n}", line.encode()) for n, line in enumerate(engine.history(tag))]
    assert places_with_key(iter(history), key) == []


@pytest.fixture
def tags(engine: engines.Engine) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    engine.remove(*made)


def secret(key: GeneratedKey, name: str = "deploy_key") -> tuple[str, str]:
    return ("--secret", f"id={name},src={key.path}")


def test_example_image_builds_runs_and_holds_no_key(
    engine: engines.Engine, context: Path, utils_key: GeneratedKey, tmp_path: Path, tags: list[str]
) -> None:
    """The README's command, under BuildKit: the final image and the build stage (what
    `--target build` or a builder's cache keeps) hold the key nowhere."""
    tag = "deploykey-example:test"
    tags.append(tag)
    built = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    assert " + private-utils==1.0" in out  # installed by uv
    assert "no key material found" in out
    assert not text_has_key(out, utils_key.text)
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    assert_image_clean(engine, tag, tmp_path / "final.tar", utils_key)
    stage = "deploykey-example-build:test"
    tags.append(stage)
    built = engine.build(context, stage, "--target", "build", *secret(utils_key), *OFFLINE)
    assert built.returncode == 0, built.stdout + built.stderr
    assert_image_clean(engine, stage, tmp_path / "build-stage.tar", utils_key)


@pytest.fixture(scope="module")
def trusting_base(
    engine: engines.Engine, github: GitHub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The base image with the API stand-in's CA in its system store, as an organisation adds its
    GitHub Enterprise Server's (or TLS-inspecting proxy's) CA to the base its builds start from:
    update-ca-certificates (Debian's ca-certificates, in the base) appends it to
    /etc/ssl/certs/ca-certificates.crt, which Python's default context reads (OpenSSL's default
    paths). The example Dockerfile is built unchanged FROM it, through its BASE build argument:
    no SSL_CERT_FILE, no step added."""
    context = tmp_path_factory.mktemp("trusting-base")
    shutil.copy(github.api.ca_file, context / "deploykey-tests-github.crt")
    (context / "Dockerfile").write_text(
        "ARG BASE\n"
        "FROM ${BASE}\n"
        "COPY deploykey-tests-github.crt /usr/local/share/ca-certificates/\n"
        "RUN update-ca-certificates\n"
    )
    tag = "deploykey-test-base-github-ca:bookworm"
    built = engine.build(context, tag)
    assert built.returncode == 0, built.stdout + built.stderr
    yield tag
    engine.remove(tag)


def assert_app_image_clean(
    engine: engines.Engine, tag: str, archive: Path, github: GitHub, token: str, log: str
) -> None:
    """Neither the App's key nor the token in `docker save` (every layer, the config, the
    manifest), `docker history --no-trunc` or the build log: deploykey scan-image told of both
    (the token as a GITHUB_TOKEN, so that its scanner looks for it too), and the test's own
    search."""
    engine.save(tag, archive)
    secrets = archive.with_name(archive.stem + "-secrets")
    secrets.mkdir()
    (secrets / "GITHUB_APP_ID").write_text(str(APP_ID))
    (secrets / "GITHUB_APP_PRIVATE_KEY").write_text(github.key_text)
    (secrets / "GITHUB_TOKEN").write_text(token)
    result = subprocess.run(
        [str(BIN / "deploykey"), "scan-image", str(archive), "--env-dir", str(secrets)],
        capture_output=True,
        text=True,
        cwd=archive.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no key material found" in result.stdout
    history = [(f"history {n}", line.encode()) for n, line in enumerate(engine.history(tag))]
    found = [*engines.everything_in(archive), *history, ("the build log", log.encode())]
    assert places_with(iter(found), github.key_text, token) == []


def test_a_github_app_instead_of_a_deploy_key(
    engine: engines.Engine,
    context: Path,
    github: GitHub,
    trusting_base: str,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """README "A GitHub App instead of deploy keys", in a Docker build: examples/docker/Dockerfile
    as written, `--secret id=github_app_private_key,src=<the App's .pem>` and no deploy key, the
    App ID as `app_id` in deploykey.yml, for an app that needs two private repositories. The
    fetch step mints one token narrowed to them (contents: read), fetches, and revokes it; the
    image runs; neither the App's key nor the token is in the image, the build stage (what
    `--target build` or a builder's cache keeps), their history, or the build log."""
    (context / "requirements.txt").write_text(APP_REQUIREMENTS)
    (context / "deploykey.yml").write_text(github.yml(app_id=APP_ID))
    engine.prune()  # the cache mount may hold mirrors of acme/* that other tests fetched over ssh
    tag = "deploykey-example-app:test"
    tags.append(tag)
    app_secret = ("--secret", f"id=github_app_private_key,src={github.key}")
    before = len(github.api.tokens)
    built = engine.build(context, tag, *app_secret, *OFFLINE, base=trusting_base)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert f"GITHUB_APP_PRIVATE_KEY: GitHub App {APP_ID} (SHA256:" in out
    assert "DEPLOY_KEY:" not in out
    assert " + private-extra==1.0" in out and " + private-utils==1.0" in out  # installed by uv
    assert "no key material found" in out
    # One token, for the installation on acme, narrowed to the two repositories (it has a third)
    # and to contents: read, revoked when the fetch step's fetch ended.
    (token,) = github.minted_since(before)
    assert sorted(token.repositories or []) == sorted(APP_REPOS)
    assert token.permissions == {"contents": "read"}
    assert token.revoked
    assert f"minted an installation token for {APP_OWNER} (installation " in out
    assert f"revoked the app token {APP_OWNER} (" in out
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    ran = engine.run(tag, "python3", "-c", "import private_extra; print(private_extra.hello())")
    assert ran.stdout.strip() == "hello from private-extra", ran.stderr
    assert_app_image_clean(engine, tag, tmp_path / "final.tar", github, token.value, out)
    stage = "deploykey-example-app-build:test"
    tags.append(stage)
    built = engine.build(
        context, stage, "--target", "build", *app_secret, *OFFLINE, base=trusting_base
    )
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert github.minted_since(before) == [token]  # every step from the builder's cache
    assert_app_image_clean(engine, stage, tmp_path / "build-stage.tar", github, token.value, out)
    # A rebuild after a change to requirements.txt (a change to app.py alone reuses both steps
    # from the builder's cache): the fetch step runs again, the kit's dependencies, uv and the
    # mirrors come from the cache mount as they do with a deploy key (nothing installed again,
    # nothing fetched), and the mirrors already hold both tags: no token is minted, GitHub is not
    # asked.
    (context / "requirements.txt").write_text(
        (context / "requirements.txt").read_text() + "# changed\n"
    )
    served = len(github.git.access_log().splitlines())
    again = engine.build(context, tag, *app_secret, *OFFLINE, base=trusting_base)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert (
        "Installing deploykey's dependencies" not in out and "not as deploykey left it" not in out
    )
    assert "installing uv into" not in out
    assert "(in the mirror, no network)" in out
    assert len(github.git.access_log().splitlines()) == served
    assert github.minted_since(before) == [token]
    assert "minted an installation token" not in out
    assert_app_image_clean(engine, tag, tmp_path / "rebuilt.tar", github, token.value, out)


def test_build_without_the_secret_says_how_to_pass_it(
    engine: engines.Engine, context: Path, tags: list[str]
) -> None:
    """`docker build` without `--secret`: the RUN fails with the fix in Docker's terms, the secret
    id the example's Dockerfile mounts, and no Heroku config var."""
    tag = "deploykey-example-nokey:test"
    tags.append(tag)
    built = engine.build(context, tag, "--target", "build", *OFFLINE)
    out = built.stdout + built.stderr
    assert built.returncode != 0, out
    assert " !     No deploy key: /run/secrets has no DEPLOY_KEY" in out
    assert (
        "then pass the key file as a BuildKit secret, `docker build --secret "
        "id=deploy_key,src=deploy_key .`, read in the Dockerfile by `RUN "
        "--mount=type=secret,id=deploy_key python3 deploykey.pyz fetch ...`" in out
    )
    assert "RUN --mount=type=secret,id=deploy_key " in (context / "Dockerfile").read_text()
    assert "heroku config:set" not in out


def test_rebuild_after_an_app_change_fetches_nothing_again(
    engine: engines.Engine,
    context: Path,
    git_server: GitServer,
    utils_key: GeneratedKey,
    tags: list[str],
) -> None:
    """After a change to the app's code, the fetch and the install steps come from the builder's
    cache (they saw only the manifests). The cache mount keeps the kit's dependencies (the wheels
    deps.lock pins), uv, its cache and the mirrors: after a change to requirements.txt, both
    steps run again but download nothing, and the git server is not asked for anything."""
    tag = "deploykey-example-rebuild:test"
    tags.append(tag)
    engine.prune()  # earlier tests built the same steps: start cold
    first = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out
    assert "Installing deploykey's dependencies" in out and "installing uv into" in out
    asked = len(git_server.log())
    (context / "app.py").write_text((context / "app.py").read_text() + "# changed\n")
    again = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert step(again.stderr, "RUN --mount=type=secret,id=deploy_key", FETCH) == "cached"
    assert step(again.stderr, "RUN --mount=type=cache,target=/var/cache/deploykey") == "cached"
    assert step(again.stderr, "COPY . .") == "ran"
    assert step(again.stderr, "RUN --mount=type=secret,id=deploy_key", CHECK) == "ran"
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    (context / "requirements.txt").write_text(
        (context / "requirements.txt").read_text() + "# changed\n"
    )
    again = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "deploykey.pyz install --fetched" in out and "no key material found" in out  # ran again
    assert "Installing deploykey's dependencies" not in out and "installing uv into" not in out
    assert "in the mirror, no network" in out
    assert len(git_server.log()) == asked
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr


def own_source_dockerfile(context: Path) -> str:
    """examples/docker/Dockerfile with the README's "An app installed from its own source": the
    `COPY . .` moved up between the fetch and the install, as the snippet shows."""
    example = (context / "Dockerfile").read_text()
    readme = (KIT / "examples" / "docker" / "README.md").read_text()
    found = re.search(
        r"## An app installed from its own source.*?```dockerfile\n(.*?)```", readme, re.S
    )
    assert found is not None, "the README's own-source snippet"
    fetch, rest = found.group(1).split("COPY . .\n")
    install, check = rest.split("RUN --mount=type=secret,id=deploy_key ")
    # The example's fetch and check also mount a GitHub App's key; the snippet shows the deploy
    # key's. The check stays where the example has it, after `COPY . .` and the install.
    assert "deploykey.pyz fetch" in fetch and install in example
    assert check.split("\n")[1] in example and CHECK in check
    example = example.replace("\nCOPY . .\n", "\n", 1)
    return example.replace(install, "COPY . .\n" + install, 1)


def test_an_app_installed_from_its_own_source(
    engine: engines.Engine,
    context: Path,
    git_server: GitServer,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """An app whose requirements.txt installs the app itself (`.`, its pyproject.toml naming the
    private dependency), built as examples/docker/README.md says: the fetch reads only the
    manifests and stays in the builder's cache after a change to the app's code; the install
    runs again, from the cache mount (nothing fetched), and the image runs the changed code."""
    package = flit_package(
        "my_app",
        "1.0",
        body='\nimport private_utils\n\n\ndef hello():\n    return private_utils.hello() + "!"\n',
        dependencies=("private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0",),
    )
    for name, text in package.items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text(text)
    (context / "requirements.txt").write_text(".\n")
    (context / "app.py").write_text("import my_app\n\nprint(my_app.hello())\n")
    (context / "Dockerfile.own").write_text(own_source_dockerfile(context))
    tag = "deploykey-example-own-source:test"
    tags.append(tag)
    arguments = (*secret(utils_key), *OFFLINE)
    built = engine.build(context, tag, *arguments, dockerfile="Dockerfile.own")
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert "github.com/acme/private-utils @ v1.0" in out
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils!", ran.stderr
    init = context / "my_app" / "__init__.py"
    init.write_text(init.read_text().replace('+ "!"', '+ "?"'))
    asked = len(git_server.log())
    again = engine.build(context, tag, *arguments, dockerfile="Dockerfile.own")
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert step(again.stderr, "RUN --mount=type=secret,id=deploy_key", FETCH) == "cached"
    assert step(again.stderr, "RUN --mount=type=cache,target=/var/cache/deploykey") == "ran"
    assert step(again.stderr, "RUN --mount=type=secret,id=deploy_key", CHECK) == "ran"
    assert len(git_server.log()) == asked
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils?", ran.stderr
    assert_image_clean(engine, tag, tmp_path / "own-source.tar", utils_key)


def non_root_dockerfile(context: Path, secret_uid: bool, cache_uid: bool) -> str:
    """examples/docker/Dockerfile with the build stage of the README's non-root snippet (section
    "A non-root user"), so the test builds what the README shows; without `uid=` (and the cache's
    own `id`) on a mount when asked."""
    example = (context / "Dockerfile").read_text()
    readme = (KIT / "examples" / "docker" / "README.md").read_text()
    found = re.search(r"## A non-root user.*?```dockerfile\n(.*?)```", readme, re.S)
    assert found is not None, "the README's non-root snippet"
    steps = found.group(1).split("# ...git and ssh as in Dockerfile...\n")[1]
    head, rest = example.split("WORKDIR /src\n")
    final = rest[rest.index("FROM ${BASE}\n") :]
    # The offline build's index settings, declared as in the example (before the install's RUN).
    arguments = "".join(
        f"ARG {name}\n" for name in ("PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX")
    )
    steps = steps.replace("USER app\n", arguments + "USER app\n")
    if not secret_uid:
        steps = steps.replace("id=deploy_key,uid=10001", "id=deploy_key")
    if not cache_uid:
        steps = steps.replace(
            "id=deploykey-10001,target=/var/cache/deploykey,uid=10001",
            "target=/var/cache/deploykey",
        )
    # The cache mount is on both steps (fetch and install --fetched), the secret on the first.
    assert steps.count("uid=10001") == secret_uid + 2 * cache_uid, steps
    return head + steps + final


def test_non_root_user_variant(
    engine: engines.Engine, context: Path, utils_key: GeneratedKey, tmp_path: Path, tags: list[str]
) -> None:
    """`USER app` in the build stage: without `uid=` on the secret, then on the cache mount, the
    build fails with the error that names the mount option (never "a bug"); with the README's
    mounts it builds, runs and holds no key."""
    tag = "deploykey-example-nonroot:test"
    tags.append(tag)
    # The test's offline wheels come from a pytest tmp dir (0700): COPY keeps modes, so `app`
    # could not read them. A real context holds no such directory.
    for path in [context / "wheels", *(context / "wheels").iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    for secret_uid, cache_uid, expected in (
        (
            False,
            False,
            "The secret /run/secrets/deploy_key is readable only by root (uid 0); "
            "deploykey runs as app (uid 10001)",
        ),
        (True, False, "The cache dir /var/cache/deploykey is not writable by app (uid 10001)"),
    ):
        (context / "Dockerfile.nonroot").write_text(
            non_root_dockerfile(context, secret_uid, cache_uid)
        )
        failed = engine.build(
            context, tag, *secret(utils_key), *OFFLINE, dockerfile="Dockerfile.nonroot"
        )
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0, out
        assert expected in out, out
        assert "This is a bug" not in out and "Traceback" not in out
        fix = "RUN --mount=type=secret,id=deploy_key,uid=10001 ..."
        if not secret_uid:
            assert fix in out, out
    (context / "Dockerfile.nonroot").write_text(non_root_dockerfile(context, True, True))
    built = engine.build(
        context, tag, *secret(utils_key), *OFFLINE, dockerfile="Dockerfile.nonroot"
    )
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert "no key material found" in out
    assert not text_has_key(out, utils_key.text)
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    assert_image_clean(engine, tag, tmp_path / "nonroot.tar", utils_key)


def step(progress: str, instruction: str, command: str = "") -> str:
    """Whether BuildKit's plain progress shows the build stage's step (or the only stage's) that
    starts with `instruction` (and holds `command`) run or CACHED."""
    pattern = r"^(#\d+) \[(?:build +)?\d+/\d+\] " + re.escape(instruction)
    pattern += f".*{re.escape(command)}" if command else ""
    steps = re.findall(pattern, progress, re.M)
    assert len(steps) == 1, progress
    return "cached" if re.search(f"^{steps[0]} CACHED$", progress, re.M) else "ran"


# The example's two steps with the key: the fetch, and the check of the app's source after `COPY . .`.
FETCH = "deploykey.pyz fetch"
CHECK = "deploykey.pyz scan --context"


def key_step(progress: str) -> str:
    """The anti-example's key step."""
    return step(progress, "RUN echo ")


def test_key_file_beside_the_dockerfile_never_enters_the_context(
    engine: engines.Engine,
    context: Path,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """The key file next to the Dockerfile (`deploy_key`, as the README's command names it): the
    example's .dockerignore keeps it out of the build context, so neither `COPY` puts it in a
    layer the builder keeps; the build succeeds and the final image and the build stage hold the
    key nowhere. (A key file under another name: test_key_file_in_the_app_fails_the_build_*.)"""
    shutil.copy(utils_key.path, context / "deploy_key")
    assert "deploy_key*" in (context / ".dockerignore").read_text().splitlines()
    tag = "deploykey-example-context:test"
    tags.append(tag)
    built = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert not text_has_key(out, utils_key.text)
    assert_image_clean(engine, tag, tmp_path / "final.tar", utils_key)
    stage = "deploykey-example-context-build:test"
    tags.append(stage)
    built = engine.build(context, stage, "--target", "build", *secret(utils_key), *OFFLINE)
    assert built.returncode == 0, built.stdout + built.stderr
    assert_image_clean(engine, stage, tmp_path / "build-stage.tar", utils_key)


@pytest.mark.parametrize("encoding", ["text", "base64"])
def test_key_file_in_the_app_fails_the_build_and_says_to_prune(
    engine: engines.Engine,
    context: Path,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
    encoding: str,
) -> None:
    """A key file under a name .dockerignore does not know (`notes/backup.txt`), as text or
    base64: `COPY . .` brings it in after the fetch, and the check step after it (the key mounted
    again, the app's source scanned) fails the build, names the file and says to prune; the layer
    `COPY` made stays in the builder's cache (a build with the same steps reuses it) until
    `docker builder prune`, which the message says to run."""
    (context / "notes").mkdir()
    data = utils_key.path.read_bytes()
    (context / "notes" / "backup.txt").write_bytes(
        data if encoding == "text" else base64.b64encode(data) + b"\n"
    )
    tag = "deploykey-example-context:test"
    tags.append(tag)
    built = engine.build(context, tag, *secret(utils_key), *OFFLINE)
    out = built.stdout + built.stderr
    assert built.returncode != 0, out
    assert step(built.stderr, "RUN --mount=type=secret,id=deploy_key", FETCH) == "ran"
    assert step(built.stderr, "RUN --mount=type=secret,id=deploy_key", CHECK) == "ran"
    assert " !     Key material found in the build context /src" in out
    assert "/src/notes/backup.txt (" in out
    assert "`docker builder prune --all`" in out
    assert "(leak::context: README.md#leak-context)" in out
    assert not text_has_key(out, utils_key.text)
    # What the message claims: the same steps up to `COPY . .` come from the builder's cache.
    dockerfile = (context / "Dockerfile").read_text()
    copy = "COPY . .\n"
    probe_file = tmp_path / "Dockerfile.probe"  # outside the context, which COPY . . copies
    probe_file.write_text(dockerfile[: dockerfile.index(copy) + len(copy)])
    probe = "deploykey-example-probe:test"
    tags.append(probe)
    probed = engine.build(context, probe, *secret(utils_key), *OFFLINE, dockerfile=str(probe_file))
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert step(probed.stderr, "COPY . .") == "cached"
    engine.prune()
    probed = engine.build(context, probe, *secret(utils_key), *OFFLINE, dockerfile=str(probe_file))
    assert probed.returncode == 0, probed.stdout + probed.stderr
    assert step(probed.stderr, "COPY . .") == "ran"


def test_anti_example_leaks_and_scan_image_catches_it(
    engine: engines.Engine,
    context: Path,
    git_server: GitServer,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """The recipe deploykey replaces: a plain build's final image looks clean, but the build
    stage is in the builder's cache, key and all; `--target build` brings it back without running
    anything, and scan-image names the layer by the digest `docker inspect` shows."""
    arguments = (
        "--build-arg",
        f"SSH_PRIVATE_KEY={utils_key.text}",
        "--build-arg",
        "KNOWN_HOST=127.0.0.1",
        "--build-arg",
        f"KNOWN_HOST_PORT={git_server.port}",
    )
    final = "deploykey-anti-example:test"
    stage = "deploykey-anti-example-build:test"
    tags.extend([final, stage])
    built = engine.build(context, final, *arguments, dockerfile="Dockerfile.anti-example")
    assert built.returncode == 0, built.stdout + built.stderr
    assert key_step(built.stderr) == "ran"
    assert text_has_key(built.stderr, utils_key.text)  # BuildKit prints the step, key and all
    assert scan_image(engine.save(final, tmp_path / "final.tar"), utils_key).returncode == 0
    built = engine.build(
        context, stage, "--target", "build", *arguments, dockerfile="Dockerfile.anti-example"
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert key_step(built.stderr) == "cached"
    archive = engine.save(stage, tmp_path / "anti.tar")
    result = scan_image(archive, utils_key)
    assert result.returncode == 1
    err = result.stderr
    assert " !     Key material found in" in err
    assert "root/.ssh/id_rsa (private key text" in err  # the file, in the layer that wrote it
    assert "created_by (private key text" in err  # the build argument, in the history
    leaky = [line for line in err.splitlines() if "root/.ssh/id_rsa" in line]
    assert any(diff_id in line for line in leaky for diff_id in engine.diff_ids(stage)), leaky
    assert not text_has_key(result.stdout + err, utils_key.text)
    assert places_with_key(engines.everything_in(archive), utils_key)  # the test agrees


def test_ssh_agent_variant(
    engine: engines.Engine, context: Path, utils_key: GeneratedKey, tmp_path: Path, tags: list[str]
) -> None:
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True).stdout
    sock = agent.split("SSH_AUTH_SOCK=")[1].split(";")[0]
    pid = int(agent.split("SSH_AGENT_PID=")[1].split(";")[0])
    tag = "deploykey-example-ssh:test"
    tags.append(tag)
    try:
        subprocess.run(
            ["ssh-add", "-q", str(utils_key.path)], env={"SSH_AUTH_SOCK": sock}, check=True
        )
        built = engine.build(
            context, tag, "--ssh", f"default={sock}", *OFFLINE, dockerfile="Dockerfile.ssh"
        )
    finally:
        os.kill(pid, signal.SIGTERM)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "via the ssh agent -> 127.0.0.1:" in built.stdout + built.stderr
    ran = engine.run(tag, "python3", "/app/app.py")
    assert ran.stdout.strip() == "hello from private-utils", ran.stderr
    assert_image_clean(engine, tag, tmp_path / "ssh.tar", utils_key)


def test_buildah_oci_archive(
    base_image: str, context: Path, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """The same example with buildah (daemonless, as rootless CI runners build), exported as an
    OCI archive: scan-image reads that layout too, and the test's own read agrees."""
    tag = "localhost/deploykey-example:test"
    try:
        built = images.build(context, tag, *secret(utils_key), *OFFLINE)
        assert built.returncode == 0, built.stdout + built.stderr
        ran = images.run(tag, "python3", "/app/app.py")
        assert ran.stdout.strip() == "hello from private-utils", ran.stderr
        archive = images.export(tag, tmp_path / "final.tar")
        result = scan_image(archive, utils_key)
        assert result.returncode == 0, result.stdout + result.stderr
        assert places_with_key(images.everything_in(archive), utils_key) == []
    finally:
        images.remove(tag)


# ---------------------------------------------------------------- without an image build


def test_install_from_a_secret_file(build: Build, utils_key: GeneratedKey, tmp_path: Path) -> None:
    """`deploykey install` as the RUN line runs it, here with --env-dir standing in for /run/secrets."""
    before = key_dirs()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    venv = tmp_path / "venv"
    result = subprocess.run(
        [str(BIN / "deploykey"), "install", "--venv", str(venv), "--env-dir", str(secrets)],
        cwd=build.app,
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(venv.glob("lib/python3*/site-packages/private_utils"))
    assert files_with_key([venv, build.app], utils_key.text) == []
    assert key_dirs() - before == set()


def test_fetch_then_install_with_no_key(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """The two-step build: `deploykey fetch` with the key (--env-dir standing in for the secret
    of its own RUN), then `install --fetched` with none, from the mirrors in the cache, asking
    the git server nothing. Given a key, `install --fetched` refuses; with another requirement
    than was fetched, it says the fetch is stale; with no fetch, that it is missing."""
    before = key_dirs()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    cache, venv = tmp_path / "mount", tmp_path / "venv"  # the cache mount
    cache.mkdir()
    kit = [str(BIN / "deploykey")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*kit, *args], cwd=build.app, env=build.environ(), capture_output=True, text=True
        )

    missing = run("install", "--fetched", "--cache-dir", str(cache), "--venv", str(venv))
    assert missing.returncode == 1 and "(fetch::missing: README.md#fetch-missing)" in missing.stderr
    fetched = run("fetch", "--cache-dir", str(cache), "--env-dir", str(secrets))
    out = fetched.stdout + fetched.stderr
    assert fetched.returncode == 0, out
    assert (
        f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out and "no key material found" in out
    )
    assert not venv.exists()
    refused = run(
        "install",
        "--fetched",
        "--cache-dir",
        str(cache),
        "--venv",
        str(venv),
        "--env-dir",
        str(secrets),
    )
    assert (
        refused.returncode == 1
        and "`install --fetched` was given keys (DEPLOY_KEY)" in refused.stderr
    )
    asked = len(build.server.log())
    installed = run("install", "--fetched", "--cache-dir", str(cache), "--venv", str(venv))
    out = installed.stdout + installed.stderr
    assert installed.returncode == 0, out
    assert "with no key on the machine" in out and "DEPLOY_KEY:" not in out
    assert len(build.server.log()) == asked  # from the mirrors: the git server was not asked
    assert list(venv.glob("lib/python3*/site-packages/private_utils"))
    assert files_with_key([venv, build.app, cache], utils_key.text) == []
    assert key_dirs() - before == set()
    (build.app / "requirements.txt").write_text(
        "other-lib @ git+ssh://git@github.com/acme/other-lib.git@v2.0\n"
    )
    stale = run("install", "--fetched", "--cache-dir", str(cache), "--venv", str(tmp_path / "v2"))
    assert stale.returncode == 1 and "(fetch::stale: README.md#fetch-stale)" in stale.stderr
    assert "it was written for other requirements than the app has now" in stale.stderr


def test_fetch_finds_a_key_file_in_the_app_and_says_to_prune(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """A key file where `deploykey fetch` runs (copied in with the manifests, or a whole context
    copied before the fetch): the fetch fails, names the file, and says to drop the layer the
    builder keeps (leak::context), printing no line of the key."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DEPLOY_KEY").write_text(utils_key.text)
    shutil.copy(utils_key.path, build.app / "deploy_key")
    cache = tmp_path / "mount"
    cache.mkdir()
    fetched = subprocess.run(
        [str(BIN / "deploykey"), "fetch", "--cache-dir", str(cache), "--env-dir", str(secrets)],
        cwd=build.app,
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    out = fetched.stdout + fetched.stderr
    assert fetched.returncode == 1, out
    assert f" !     Key material found in the build context {build.app}" in out
    assert f"{build.app / 'deploy_key'} (private key text, " in out
    assert "`docker builder prune --all`" in out
    assert "(leak::context: README.md#leak-context)" in out
    assert not text_has_key(out, utils_key.text)


def test_setup_shell_then_own_install_then_cleanup(
    build: Build, utils_key: GeneratedKey, tmp_path: Path
) -> None:
    """A CI job (CircleCI's recipe, done safely): DEPLOY_KEY as base64 in the environment; setup
    fetches into temporary mirrors, removes the key dir and makes the shell forget DEPLOY_KEY; the
    job's own pip installs from the mirrors; cleanup removes them and unsets the settings."""
    before = key_dirs()
    temp_mirrors = set(Path(tempfile.gettempdir()).glob("deploykey-mirrors-*"))
    venv = tmp_path / "venv"
    script = f"""
        set -euo pipefail
        eval "$({BIN}/deploykey setup --shell)"
        test -n "$GIT_CONFIG_COUNT" && test -z "${{GIT_SSH_COMMAND:-}}"
        echo "during: ${{DEPLOY_KEY:-unset}}"
        ls -d /dev/shm/deploykey-???????? 2>/dev/null || echo "no key dir"
        {sys.executable} -m venv {venv}
        {venv}/bin/pip install --no-cache-dir --no-input -r requirements.txt
        eval "$({BIN}/deploykey cleanup --shell)"
        echo "after: ${{GIT_CONFIG_COUNT:-unset}} ${{DEPLOYKEY_MIRRORS:-unset}}"
    """
    env = build.environ(DEPLOY_KEY=base64.b64encode(utils_key.text.encode()).decode())
    result = subprocess.run(
        ["bash", "-c", script], cwd=build.app, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "during: unset" in result.stdout and "no key dir" in result.stdout
    assert "Successfully installed private-utils-1.0" in result.stdout
    assert "after: unset unset" in result.stdout
    assert "removed the key dir" in result.stderr and "removed the mirrors" in result.stderr
    assert set(Path(tempfile.gettempdir()).glob("deploykey-mirrors-*")) == temp_mirrors
    assert key_dirs() - before == set()
    assert files_with_key([build.app, venv, build.home], utils_key.text) == []
    assert not text_has_key(result.stdout + result.stderr, utils_key.text)


# ---------------------------------------------------------------- scan-image on handmade archives


def _archive(
    path: Path,
    layers: list[bytes],
    config: dict[str, object],
    docker: bool,
    extra: dict[str, bytes] | None = None,
) -> Path:
    members = image_members(layers, config, docker)
    members.update(extra or {})
    path.write_bytes(tar_bytes(members))
    return path


@pytest.mark.parametrize("docker", [False, True], ids=["oci-archive", "docker-save"])
def test_scan_image_reads_layers_and_config(tmp_path: Path, keys_dir: Path, docker: bool) -> None:
    key = make_key(keys_dir)
    clean = tar_bytes(
        {
            "app/main.py": b"print(1)\n",
            "root/.ssh/id.pub": key.path.with_suffix(".pub").read_bytes(),
            # a library's built-in test key (libgnutls has one): named, not failing the check
            "usr/lib/libtest.so": make_key(keys_dir).path.read_bytes(),
        },
        True,
    )
    leaky = tar_bytes({"tmp/deleted-later": key.text.encode()}, False)
    config = {
        "config": {"Env": ["PATH=/usr/bin"]},
        "history": [{"created_by": f"|1 SSH_PRIVATE_KEY={key.text} /bin/sh -c x"}],
    }
    # Any other member (a legacy layer's v1 json, `repositories`) is read too.
    legacy = {"0/json": json.dumps({"container_config": {"Cmd": [key.text]}}).encode()}
    archive = _archive(tmp_path / "image.tar", [clean, leaky], config, docker, legacy)
    result = scan_image(archive, key)
    assert result.returncode == 1
    assert " !     Key material found in 3 place(s) of the image" in result.stderr
    assert "archive: 0/json (private key text" in result.stderr
    assert "config: history[0].created_by (private key text" in result.stderr
    assert "tmp/deleted-later (private key text" in result.stderr
    clean_archive = _archive(tmp_path / "clean.tar", [clean], {"history": []}, docker)
    ok = scan_image(clean_archive, key)
    assert ok.returncode == 0, ok.stderr
    assert "read 1 layers (3 files) and the config" in ok.stdout
    assert (
        "usr/lib/libtest.so (another private key, not one of this build's keys): not this build's"
        in ok.stderr
    )


@pytest.mark.parametrize("docker", [False, True], ids=["oci-archive", "docker-save"])
def test_scan_image_opens_archives_in_layers(tmp_path: Path, keys_dir: Path, docker: bool) -> None:
    """The key inside a wheel, a .tar.gz, a gzip named .json and a zip named .png in a layer is
    found, named by the archive and its member; an archive in a layer that cannot be unpacked
    fails the check (scan::incomplete), unless DEPLOYKEY_SCAN_INCOMPLETE=warn."""
    import gzip
    import io
    import zipfile

    key = make_key(keys_dir)
    text = key.text.encode()

    def zipped(name: str) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, text)
        return buffer.getvalue()

    layer = tar_bytes(
        {
            "wheels/private_utils-1.0-py3-none-any.whl": zipped("private_utils/key.txt"),
            "srv/backup.tar.gz": tar_bytes({"home/.ssh/id": text}, True),
            "srv/settings.json": gzip.compress(text),
            "srv/logo.png": zipped("inside.txt"),
        },
        True,
    )
    archive = _archive(tmp_path / "image.tar", [layer], {"history": []}, docker)
    result = scan_image(archive, key)
    assert result.returncode == 1, result.stdout + result.stderr
    for place in (
        "wheels/private_utils-1.0-py3-none-any.whl!private_utils/key.txt (private key text",
        "srv/backup.tar.gz!home/.ssh/id (private key text",
        "srv/settings.json!(decompressed) (private key text",
        "srv/logo.png!inside.txt (private key text",
    ):
        assert place in result.stderr, place
    whole = gzip.compress(b"nothing secret\n" * 500)
    broken = tar_bytes({"srv/cut.tar.gz": whole[: len(whole) // 2]}, True)
    archive = _archive(tmp_path / "broken.tar", [broken], {"history": []}, docker)
    refused = scan_image(archive, key)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "could not unpack 1 archive(s) in full" in refused.stderr
    assert "srv/cut.tar.gz (" in refused.stderr and "no key material found" not in refused.stdout
    warned = subprocess.run(
        [str(BIN / "deploykey"), "scan-image", str(archive), "--key-file", str(key.path)],
        capture_output=True,
        text=True,
        env={**os.environ, "DEPLOYKEY_SCAN_INCOMPLETE": "warn"},
    )
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "srv/cut.tar.gz (" in warned.stderr and "no key material found" in warned.stdout


def test_scan_image_refuses_what_it_cannot_read(tmp_path: Path, keys_dir: Path) -> None:
    key = make_key(keys_dir)
    zstd = b"\x28\xb5\x2f\xfd" + b"\0" * 64
    archive = _archive(tmp_path / "zstd.tar", [zstd], {}, docker=False)
    result = scan_image(archive, key)
    assert result.returncode == 1
    assert "is zstd-compressed" in result.stderr
    (tmp_path / "nothing.tar").write_bytes(b"not a tar")
    result = scan_image(tmp_path / "nothing.tar", key)
    assert result.returncode == 1 and "Cannot read the image archive" in result.stderr


# ---------------------------------------------------------------- CI examples (examples/ci)


def ci_shell(tmp_path: Path, engine: engines.Engine, variables: dict[str, str]) -> dict[str, str]:
    """The environment a CI job's shell gives the example's lines: the CI's variables, and a
    `docker` first on PATH that is the real client with what this machine needs added to `docker
    build` (the host network, the local base image, the wheels instead of PyPI), nothing else.
    BuildKit is on only if the example turns it on."""
    shim = tmp_path / "ci-bin"
    shim.mkdir()
    extra = " ".join(["--progress plain --network host", f"--build-arg BASE={engines.BASE_IMAGE}"])
    extra += " " + " ".join(OFFLINE)
    (shim / "docker").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = build ]; then shift; exec {engines.DOCKER} build {extra} "$@"; fi\n'
        f'exec {engines.DOCKER} "$@"\n'
    )
    (shim / "docker").chmod(0o755)
    env = {name: value for name, value in engine.env.items() if name != "DOCKER_BUILDKIT"}
    return {**env, "PATH": f"{shim}:{env['PATH']}", **variables}


def run_ci_lines(
    lines: list[str], context: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        cwd=context,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_github_actions_example_builds_with_the_secret_from_the_step_env(
    engine: engines.Engine,
    context: Path,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """examples/ci/github-actions.yml's build step, its `run` line as written, with the step's
    `env` as Actions sets it (the repository secret's value in DEPLOY_KEY). Not run here: the
    runner, and the step that clones deploykey from GitHub (the context already holds the pyz)."""
    workflow = yaml.safe_load((KIT / "examples" / "ci" / "github-actions.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["image"]["steps"] if s.get("id") == "build"]
    assert step["env"]["DEPLOY_KEY"] == "${{ secrets.DEPLOY_KEY }}"
    variables = {**step["env"], "DEPLOY_KEY": utils_key.text.rstrip("\n")}  # as Actions trims it
    tags.append("my-app")
    built = run_ci_lines([step["run"]], context, ci_shell(tmp_path, engine, variables))
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    assert "no key material found" in out and not text_has_key(out, utils_key.text)
    assert engine.run("my-app", "python3", "/app/app.py").stdout.strip() == (
        "hello from private-utils"
    )
    assert_image_clean(engine, "my-app", tmp_path / "my-app.tar", utils_key)


def test_gitlab_ci_example_builds_with_the_secret_from_a_file_variable(
    engine: engines.Engine,
    context: Path,
    utils_key: GeneratedKey,
    tmp_path: Path,
    tags: list[str],
) -> None:
    """examples/ci/gitlab-ci.yml's script, as written, with its variables and DEPLOY_KEY as a
    File-type CI/CD variable (GitLab writes the value to a file and puts the file's path in the
    variable). Not run here: the runner, docker:dind, and before_script (apk, the clone from
    GitHub; the context already holds the pyz)."""
    pipeline = yaml.safe_load((KIT / "examples" / "ci" / "gitlab-ci.yml").read_text())
    job = pipeline["build-image"]
    variable_file = tmp_path / "DEPLOY_KEY"
    variable_file.write_text(utils_key.text)
    variables = {
        **job["variables"],
        "DEPLOY_KEY": str(variable_file),
        "CI_REGISTRY_IMAGE": "registry.example.com/acme/my-app",
        "CI_COMMIT_SHORT_SHA": "0123abcd",
    }
    image = "registry.example.com/acme/my-app:0123abcd"
    tags.append(image)
    built = run_ci_lines(job["script"], context, ci_shell(tmp_path, engine, variables))
    out = built.stdout + built.stderr
    assert built.returncode == 0, out
    assert f"DEPLOY_KEY: ED25519 key {utils_key.fingerprint}" in out
    assert "no key material found" in out and not text_has_key(out, utils_key.text)
    assert_image_clean(engine, image, tmp_path / "gitlab.tar", utils_key)
