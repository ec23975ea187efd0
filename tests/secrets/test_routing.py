"""Routes: which key a repository goes to, and the router git runs as its ssh command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import make_key
from deploykey.core.errors import UserError
from deploykey.secrets import keys, routing


@pytest.fixture
def three(keys_dir: Path) -> dict[str, keys.Key]:
    names = ("DEPLOY_KEY", "DEPLOY_KEY_BILLING", "DEPLOY_KEY_UTILS")
    return {name: keys.load(make_key(keys_dir).path.read_bytes(), name, "test") for name in names}


def test_config_routes_and_order(three: dict[str, keys.Key]) -> None:
    mapping = {
        "DEPLOY_KEY_UTILS": ("acme/utils", "acme/utils-*", "gitlab.com"),
        "DEPLOY_KEY_BILLING": ("github.com/acme/billing",),
    }
    hosts = ["github.com", "gitlab.com"]
    routes = routing.ordered(
        routing.from_config(three, mapping, hosts) + routing.fallback(three["DEPLOY_KEY"], hosts)
    )
    assert routing.render(routes).splitlines() == [
        "github.com acme/utils deploy_key_utils.github.com",
        "gitlab.com acme/utils deploy_key_utils.gitlab.com",
        "github.com acme/billing deploy_key_billing.github.com",
        "github.com acme/utils-* deploy_key_utils.github.com",
        "gitlab.com acme/utils-* deploy_key_utils.gitlab.com",
        "gitlab.com * deploy_key_utils.gitlab.com",
        "github.com * deploy_key.github.com",
    ]

    def key_for(host: str, repo: str) -> str | None:
        route = routing.lookup(routes, host, repo)
        return route.key.name if route else None

    assert key_for("github.com", "/Acme/Utils.git") == "DEPLOY_KEY_UTILS"
    assert key_for("github.com", "acme/utils-extra") == "DEPLOY_KEY_UTILS"
    assert key_for("github.com", "acme/utilsx") == "DEPLOY_KEY"  # no prefix confusion
    assert key_for("gitlab.com", "group/other") == "DEPLOY_KEY_UTILS"
    assert key_for("bitbucket.org", "team/x") is None


def test_mapping_a_key_that_is_not_set(three: dict[str, keys.Key]) -> None:
    with pytest.raises(UserError) as caught:
        routing.from_config(three, {"DEPLOY_KEY_TYPO": ("acme/x",)}, ["github.com"])
    assert (
        caught.value.title
        == "deploykey.yml maps DEPLOY_KEY_TYPO, but no config var DEPLOY_KEY_TYPO is set"
    )


def test_greetings(three: dict[str, keys.Key]) -> None:
    key = three["DEPLOY_KEY_BILLING"]
    deploy = routing.from_greeting(
        key,
        "github.com",
        "Hi acme/Billing! You've successfully authenticated, but GitHub does not provide shell access.",
    )
    assert (deploy.pattern, deploy.rank, deploy.origin) == (
        "acme/billing",
        routing.EXACT,
        "github.com says: Hi acme/Billing!",
    )
    user = routing.from_greeting(
        key, "github.com", "Hi machine-user! You've successfully authenticated, but..."
    )
    assert (user.pattern, user.rank) == ("*", routing.HOST_WIDE)
    other = routing.from_greeting(key, "gitlab.com", "Welcome to GitLab, @deployer!")
    assert (other.pattern, other.origin) == ("*", "accepted by gitlab.com")


@pytest.fixture
def router(tmp_path: Path) -> Path:
    """The router, with an `ssh` that prints its arguments instead of connecting."""
    fake_ssh = tmp_path / "print-args"
    fake_ssh.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake_ssh.chmod(0o755)
    script = tmp_path / "ssh"
    script.write_text(routing.router_script(str(fake_ssh)))
    (tmp_path / "routes").write_text(
        "github.com acme/billing deploy_key_billing.github.com\n"
        "github.com acme/tools-* deploy_key_tools.github.com\n"
        "github.com * deploy_key.github.com\n"
    )
    return script


def route(router: Path, *args: str) -> list[str]:
    result = subprocess.run(["sh", str(router), *args], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    ("command", "alias"),
    [
        ("git-upload-pack '/acme/billing.git'", "deploy_key_billing.github.com"),
        ("git-upload-pack 'acme/billing.git'", "deploy_key_billing.github.com"),  # scp-like URL
        ("git-upload-pack '/ACME/Billing'", "deploy_key_billing.github.com"),
        ("git-upload-pack '/acme/tools-cli.git'", "deploy_key_tools.github.com"),
        ("git-upload-pack '/acme/billingx.git'", "deploy_key.github.com"),
        ("git-receive-pack '/acme/billing.git'", "deploy_key_billing.github.com"),
    ],
)
def test_router_picks_the_alias(router: Path, command: str, alias: str) -> None:
    config = str(router.parent / "ssh_config")
    args = ["-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "git@github.com", command]
    assert route(router, *args) == [
        "-F",
        config,
        "-o",
        "SendEnv=GIT_PROTOCOL",
        "-p",
        "2222",
        f"git@{alias}",
        command,
    ]


def test_router_leaves_other_hosts_and_options(router: Path) -> None:
    config = str(router.parent / "ssh_config")
    command = "git-upload-pack '/acme/billing.git'"
    assert route(router, "-4", "git@gitlab.com", command) == [
        "-F",
        config,
        "-4",
        "git@gitlab.com",
        command,
    ]
    assert route(router, "-T", "github.com") == ["-F", config, "-T", "deploy_key.github.com"]
    # an option value that looks like a host is not the destination
    assert route(router, "-l", "git", "github.com", command)[4] == "deploy_key_billing.github.com"


def original_repo(command: str) -> str:
    """The repository the router matches routes against, as its first version computed it:
    `printf '%s' PATH | tr -d "'\""` lowercased by `tr` (ASCII letters only), in `$(...)` (which
    drops trailing newlines), then one leading `/`, one trailing `/` and one `.git` removed."""
    path = command.split(" ", 1)[1]
    text = path.replace("'", "").replace('"', "")
    text = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text).rstrip("\n")
    text = text.removeprefix("/").removesuffix("/")
    return text.removesuffix(".git")


PARSED = [
    "git-upload-pack '/acme/billing.git'",
    "git-upload-pack 'acme/billing.git'",
    "git-upload-pack /acme/billing.git",
    "git-upload-pack '/ACME/Billing.GIT'",
    "git-upload-pack '/Acme/BILLING.git'",
    'git-upload-pack "/acme/billing.git"',
    "git-upload-pack '/acme/bill'\\''ing.git'",  # git's quoting of a ' in the path
    "git-upload-pack '/acme/\"billing\".git'",
    "git-upload-pack ''\"'/acme/billing.git'\"''",
    "git-upload-pack '/acme/billing.git/'",
    "git-upload-pack '/acme/billing/'",
    "git-upload-pack '/acme/billing.git.git'",
    "git-upload-pack '//acme/billing.git'",
    "git-upload-pack '/org/group/sub/deep.git'",
    "git-upload-pack '/Org/Group/Sub/Deep.git'",
    "git-upload-pack '/acme/tools-cli.git'",
    "git-upload-pack '/ACME/TOOLS-CLI'",
    "git-upload-pack '/acme/billing.git\n'",
    "git-upload-pack '/acme/billing\n\n'",
    "git-upload-pack '/acme/BILLING\n'",
    "git-upload-pack '/acme/billing.git'\n",
    "git-upload-pack '/acme/émile.git'",
    "git-upload-pack '/ACME/ÉMILE.git'",
    "git-upload-pack '/acme/%s%d.git'",
    "git-upload-pack ''",
    "git-upload-pack '/'",
    "git-receive-pack '/ACME/Billing.git'",
    "git-upload-archive '/acme/Tools-x.git'",
]


@pytest.mark.parametrize("command", PARSED)
def test_router_parses_the_repository_path_as_tr_did(tmp_path: Path, command: str) -> None:
    """Quotes, upper case, nested paths, trailing slashes and newlines: the router matches routes
    against exactly the path its first version (two `tr` processes) computed. A route for that
    path, then a catch-all: the first is taken only if the router's path is that one."""
    expected = original_repo(command)
    fake_ssh = tmp_path / "print-args"
    fake_ssh.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake_ssh.chmod(0o755)
    script = tmp_path / "ssh"
    script.write_text(routing.router_script(str(fake_ssh)))
    assert "\n" not in expected and " " not in expected
    pattern = expected.replace("\\", "?")  # a backslash escapes in a glob: any one character
    (tmp_path / "routes").write_text(
        f"github.com {pattern} exact.github.com\ngithub.com * other.github.com\n"
        if expected
        else "github.com ?* other.github.com\ngithub.com * exact.github.com\n"
    )
    config = str(tmp_path / "ssh_config")
    for shell in ("sh", "bash"):
        args = ["-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "git@github.com", command]
        result = subprocess.run([shell, str(script), *args], capture_output=True, check=True)
        printed = result.stdout.decode().split("\n")
        assert printed[:7] == ["-F", config, "-o", "SendEnv=GIT_PROTOCOL", "-p", "2222"] + [
            "git@exact.github.com"
        ], (shell, expected)


@pytest.mark.parametrize(
    ("args", "destination"),
    [
        (["-p", "22", "github.com"], "deploy_key_billing.github.com"),
        (["-p22", "github.com"], "deploy_key_billing.github.com"),
        (
            ["-o", "Port=22", "-o", "SendEnv=GIT_PROTOCOL", "git@github.com"],
            "git@deploy_key_billing.github.com",
        ),
        (["-oSendEnv=GIT_PROTOCOL", "github.com"], "deploy_key_billing.github.com"),
        (["-4", "-6", "-T", "github.com"], "deploy_key_billing.github.com"),
        (["-o", "github.com", "gitlab.com"], "gitlab.com"),  # an option's value is no host
        (["-p", "github.com", "git@github.com"], "git@deploy_key_billing.github.com"),
        (["-l", "git", "-i", "github.com", "github.com"], "deploy_key_billing.github.com"),
        (["user@name@github.com"], "user@name@deploy_key_billing.github.com"),
    ],
)
def test_router_finds_the_destination_among_options(
    router: Path, args: list[str], destination: str
) -> None:
    command = "git-upload-pack '/Acme/Billing.git'"
    printed = route(router, *args, command)
    assert printed[2:] == [*args[:-1], destination, command]


# ---------------------------------------------------------------- end to end, against the real sshd

from conftest import Build, GeneratedKey, files_with_key, key_dirs, snapshot  # noqa: E402
from support.gitserver import GitServer  # noqa: E402

BILLING = "billing @ git+ssh://git@github.com/acme/billing.git@v1.0"
UTILS = "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0"


def deploy_key(server: GitServer, keys_dir: Path, *repos: str) -> GeneratedKey:
    """A GitHub-style deploy key: registered on exactly these repositories."""
    key = make_key(keys_dir)
    server.grant(key.label, key.public, list(repos))
    return key


def utils_and_billing_keys(
    build: Build, server: GitServer, keys_dir: Path, requirements: str
) -> tuple[GeneratedKey, GeneratedKey]:
    """acme/private-utils and acme/billing, each opened by its own deploy key, set as
    DEPLOY_KEY_UTILS and DEPLOY_KEY_BILLING; requirements.txt holds `requirements`."""
    utils = deploy_key(server, keys_dir, "acme/private-utils")
    billing = deploy_key(server, keys_dir, "acme/billing")
    build.set_key(utils.text, "DEPLOY_KEY_UTILS")
    build.set_key(billing.text, "DEPLOY_KEY_BILLING")
    (build.app / "requirements.txt").write_text(requirements)
    return utils, billing


def fetched_by(server: GitServer, key: GeneratedKey) -> set[str]:
    return {
        line.split()[1]
        for line in server.log()
        if line.startswith(key.label + " ") and line.endswith(" granted")
    }


def installed(build: Build) -> set[str]:
    site = next((build.app / ".venv" / "lib").glob("python3*/site-packages"))
    return {p.name.split("-")[0] for p in site.glob("*.dist-info")} - {"pip", "setuptools"}


def assert_clean(
    build: Build, result: subprocess.CompletedProcess[str], before: set[str], *keys: GeneratedKey
) -> None:
    from conftest import text_has_key

    for key in keys:
        assert files_with_key([build.app, build.cache], key.text) == []
        assert not text_has_key(result.stdout + result.stderr, key.text)
    assert key_dirs() - before == set()


def test_two_keys_each_for_its_repository_mapped(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    before = key_dirs()
    utils, billing = utils_and_billing_keys(
        build,
        git_server,
        keys_dir,
        f"{UTILS}\n{BILLING}\n",  # as users write it
    )
    with (build.app / "deploykey.yml").open("a") as yml:
        yml.write(
            "keys:\n  DEPLOY_KEY_UTILS: [acme/private-utils]\n  DEPLOY_KEY_BILLING: [acme/billing]\n"
        )
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(build) >= {"private_utils", "billing"}
    assert fetched_by(git_server, utils) == {"acme/private-utils"}
    assert fetched_by(git_server, billing) == {"acme/billing"}
    assert "route: github.com: acme/billing (deploykey.yml) -> DEPLOY_KEY_BILLING" in result.stdout
    assert_clean(build, result, before, utils, billing)


def test_keys_routed_by_what_github_says_they_open(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    before = key_dirs()
    utils, billing = utils_and_billing_keys(build, git_server, keys_dir, f"{BILLING}\n{UTILS}\n")
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "route: github.com: acme/billing (github.com says: Hi acme/billing!) -> DEPLOY_KEY_BILLING"
        in result.stdout
    )
    assert fetched_by(git_server, billing) == {"acme/billing"}
    assert fetched_by(git_server, utils) == {"acme/private-utils"}
    assert_clean(build, result, before, utils, billing)


def test_transitive_dependency_and_scp_like_submodule(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    """requirements.txt names only app-core; it depends on private-utils and has a submodule
    `git@github.com:acme/sub.git`: git fetches both through the router, each with its own key."""
    before = key_dirs()
    core = deploy_key(git_server, keys_dir, "acme/app-core")
    utils = deploy_key(git_server, keys_dir, "acme/private-utils")
    sub = deploy_key(git_server, keys_dir, "acme/sub")
    for name, key in (("DEPLOY_KEY", core), ("DEPLOY_KEY_UTILS", utils), ("DEPLOY_KEY_SUB", sub)):
        build.set_key(key.text, name)
    (build.app / "requirements.txt").write_text(
        "app-core @ git+ssh://git@github.com/acme/app-core.git@v1.0\n"
    )
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed(build) >= {"app_core", "private_utils"}
    assert fetched_by(git_server, core) == {"acme/app-core"}
    assert fetched_by(git_server, utils) == {"acme/private-utils"}
    assert fetched_by(git_server, sub) == {"acme/sub"}
    assert_clean(build, result, before, core, utils, sub)


def test_swapped_mapping_fails_before_installing(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    before = key_dirs()
    utils, billing = utils_and_billing_keys(build, git_server, keys_dir, f"{UTILS}\n{BILLING}\n")
    with (build.app / "deploykey.yml").open("a") as yml:
        yml.write(
            "keys:\n  DEPLOY_KEY_UTILS: [acme/billing]\n  DEPLOY_KEY_BILLING: [acme/private-utils]\n"
        )
    state = snapshot(build.app, build.cache)
    result = build.compile()
    assert result.returncode == 1
    err = result.stderr
    assert " !     2 of 2 private requirements cannot be fetched" in err
    assert (
        f"requirements.txt:1 github.com/acme/private-utils @ v1.0: the key {billing.fingerprint} "
        "(DEPLOY_KEY_BILLING) is valid, but for another repository: github.com answered "
        "`Repository not found` for acme/private-utils. github.com says it opens acme/billing."
        in err
    )
    assert (
        f"the key {utils.fingerprint} (DEPLOY_KEY_UTILS) is valid, but for another repository"
        in err
    )
    assert "Installing" not in result.stdout
    assert snapshot(build.app, build.cache) == state
    assert_clean(build, result, before, utils, billing)


def test_repository_no_key_can_read_is_named_first(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    before = key_dirs()
    utils = deploy_key(git_server, keys_dir, "acme/private-utils")
    build.set_key(utils.text, "DEPLOY_KEY_UTILS")
    (build.app / "requirements.txt").write_text(f"{UTILS}\n{BILLING}\n")
    state = snapshot(build.app)
    result = build.compile()
    assert result.returncode == 1
    assert "requirements.txt:1  github.com/acme/private-utils @ v1.0" in result.stdout
    assert (
        "requirements.txt:2 github.com/acme/billing @ v1.0: no key is routed to acme/billing"
        in result.stderr
    )
    assert (
        "Fix: add a deploy key for acme/billing as DEPLOY_KEY_<NAME> (`heroku config:set "
        'DEPLOY_KEY_<NAME>="$(cat deploy_key)"`; map it under `keys:`' in result.stderr
    )
    assert "Installing" not in result.stdout
    assert snapshot(build.app) == state
    # The cache keeps the one complete mirror and its seal (the next build fetches only what
    # changed), and nothing half-written.
    mirrors = build.cache / "deploykey" / "mirrors" / "github.com" / "acme"
    assert sorted(p.name for p in mirrors.iterdir()) == [
        "private-utils.git",
        "private-utils.git.seal",
    ]
    assert_clean(build, result, before, utils)


def test_https_url_of_a_routed_repository_goes_over_ssh(
    build: Build, git_server: GitServer, keys_dir: Path
) -> None:
    before = key_dirs()
    utils = deploy_key(git_server, keys_dir, "acme/private-utils")
    build.set_key(utils.text, "DEPLOY_KEY_UTILS")
    (build.app / "requirements.txt").write_text(
        "private-utils @ git+https://github.com/acme/private-utils.git@v1.0\n"
    )
    with (build.app / "deploykey.yml").open("a") as yml:
        yml.write("keys:\n  DEPLOY_KEY_UTILS: [acme/private-utils]\n")
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "https rewritten to ssh: ok, v1.0 is" in result.stdout
    assert fetched_by(git_server, utils) == {"acme/private-utils"}
    direct_url = next(
        (build.app / ".venv").rglob("private_utils-1.0.dist-info/direct_url.json")
    ).read_text()
    assert "https://github.com/acme/private-utils.git" in direct_url  # as the user wrote it
    assert_clean(build, result, before, utils)


def test_a_key_for_a_whole_host(build: Build, git_server: GitServer, keys_dir: Path) -> None:
    """A GitLab group deploy key: one key for every repository on gitlab.com."""
    before = key_dirs()
    group = deploy_key(git_server, keys_dir, "group/lib")
    build.set_key(group.text, "DEPLOY_KEY_GITLAB")
    (build.app / "requirements.txt").write_text(
        "group-lib @ git+ssh://git@gitlab.com/group/lib.git@v1.0\n"
    )
    (build.app / "deploykey.yml").write_text(
        git_server.deploykey_yml("gitlab.com") + "keys:\n  DEPLOY_KEY_GITLAB: [gitlab.com]\n"
    )
    result = build.compile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "route: gitlab.com: every repository (deploykey.yml) -> DEPLOY_KEY_GITLAB" in result.stdout
    )
    assert installed(build) >= {"group_lib"}
    assert_clean(build, result, before, group)
