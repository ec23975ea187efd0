"""Each error's advice on setting a key is the platform's own, through the real entry points:
bin/compile and the app hooks (Heroku), bin/compile --dry-run and a .env file, `deploykey doctor`
(local), `deploykey install` (Docker), `deploykey setup` (GitHub Actions, GitLab CI, another CI).
CNB's bin/build is in test_cnb.py, next to its lifecycle helpers."""

from __future__ import annotations

import base64
import string
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Build, GeneratedKey, make_key, text_has_key
from deploykey.core import errors
from deploykey.core.errors import PLATFORMS, PROBLEMS, UserError

HEROKU = "heroku config:set"
DOCKER = (
    "pass the key file as a BuildKit secret, `docker build --secret id=deploy_key,src=deploy_key "
    ".`, read in the Dockerfile by `RUN --mount=type=secret,id=deploy_key python3 deploykey.pyz "
    "fetch ...`"
)


def fix_of(stderr: str) -> str:
    """The `Fix:` paragraph of a rendered error, joined into one line."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(" !     Fix: "))
    text = [lines[start].removeprefix(" !     Fix: ")]
    for line in lines[start + 1 :]:
        if not line.startswith(" !          "):
            break
        text.append(line.strip())
    return " ".join(text)


def truncated(key: GeneratedKey) -> str:
    """The key without its END line, as a paste cut short leaves it."""
    return "".join(key.text.splitlines(keepends=True)[:-1])


# ---------------------------------------------------------------- the wording, for every platform


@pytest.mark.parametrize("platform", [*PLATFORMS.values(), errors.local(None)])
def test_every_problem_renders_on_every_platform(
    platform: errors.Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(errors, "_platform", platform)
    for slug, problem in PROBLEMS.items():
        fields = {
            name
            for text in (problem.title, problem.why, problem.fix)
            for _, name, _, _ in string.Formatter().parse(text)
            if name and name not in ("setting", "set_key")
        }
        error = UserError(slug, **{name: f"<{name}>" for name in fields})
        text = error.title + error.why + error.fix
        assert "{" not in text.replace("${{", ""), slug
        if platform.name != "heroku":
            assert HEROKU not in text, (platform.name, slug)


def test_the_key_name_reaches_the_advice(monkeypatch: pytest.MonkeyPatch) -> None:
    def fix(platform: errors.Platform) -> str:
        monkeypatch.setattr(errors, "_platform", platform)
        return UserError("key::empty", source="S", name="DEPLOY_KEY_BILLING").fix

    assert fix(PLATFORMS["heroku"]) == (
        "Set it to the private key file's content: "
        '`heroku config:set DEPLOY_KEY_BILLING="$(cat deploy_key)"`.'
    )
    assert "--secret id=deploy_key_billing,src=deploy_key" in fix(PLATFORMS["docker"])
    assert "`env: DEPLOY_KEY_BILLING: ${{ secrets.DEPLOY_KEY_BILLING }}`" in fix(
        PLATFORMS["github"]
    )
    assert '--key-file "$DEPLOY_KEY_BILLING"' in fix(PLATFORMS["gitlab"])
    # cnb.py: a binding named `billing` gives DEPLOY_KEY_BILLING (sources.binding_key_name).
    assert "cp deploy_key bindings/billing/ssh-privatekey" in fix(PLATFORMS["cnb"])
    # A path with braces is a path, not a template.
    assert ">> /tmp/{x}.env` (a line in the .env file)" in fix(errors.local("/tmp/{x}.env"))


def test_rotation_advice_names_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_platform", PLATFORMS["heroku"])
    heroku = UserError("leak::found", count=1, files="f").fix
    assert (
        'replace DEPLOY_KEY with it (`heroku config:set DEPLOY_KEY="$(cat deploy_key)"`)' in heroku
    )
    monkeypatch.setattr(errors, "_platform", PLATFORMS["docker"])
    docker = UserError("leak::image", count=1, path="i.tar", places="p").fix
    assert "replace DEPLOY_KEY with it (pass the key file as a BuildKit secret" in docker
    assert HEROKU not in docker


# ---------------------------------------------------------------- Heroku: bin/compile, app hooks


def test_heroku_compile_says_heroku_config_set(build: Build) -> None:
    result = build.compile()
    assert result.returncode == 1
    assert fix_of(result.stderr).endswith(
        "add deploy_key.pub as a read-only deploy key of the repository, then "
        '`heroku config:set DEPLOY_KEY="$(cat deploy_key)"`.'
    )
    build.set_key("")
    result = build.compile()
    assert result.returncode == 1
    assert " !     The config var exists but holds no key." in result.stderr
    assert fix_of(result.stderr) == (
        'Set it to the private key file\'s content: `heroku config:set DEPLOY_KEY="$(cat deploy_key)"`.'
    )


def test_app_hook_says_heroku_config_set(build: Build, keys_dir: Path) -> None:
    key = make_key(keys_dir)
    build.set_key(truncated(key))
    env = build.environ(
        BUILD_DIR=str(build.app), CACHE_DIR=str(build.cache), ENV_DIR=str(build.env_dir)
    )
    result = subprocess.run(
        [str(BIN / "deploykey"), "pre-compile"],
        cwd=build.app,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f" !     {build.env_dir}/DEPLOY_KEY holds an incomplete private key" in result.stderr
    assert fix_of(result.stderr) == (
        'Set DEPLOY_KEY again from the whole key file: `heroku config:set DEPLOY_KEY="$(cat '
        'deploy_key)"`.'
    )
    assert not text_has_key(result.stdout + result.stderr, key.text)


# ---------------------------------------------------------------- local: --dry-run, .env, doctor


def test_dry_run_names_the_env_dir(build: Build, keys_dir: Path) -> None:
    key = make_key(keys_dir)
    build.set_key(truncated(key))
    result = build.compile("--dry-run")
    assert result.returncode == 1
    fix = fix_of(result.stderr)
    assert fix == (
        f"Set DEPLOY_KEY again from the whole key file: `cp deploy_key {build.env_dir}/DEPLOY_KEY` "
        "(a file in the env dir)."
    )
    assert HEROKU not in result.stderr
    assert not text_has_key(result.stdout + result.stderr, key.text)


def test_dotenv_file_names_the_file(build: Build) -> None:
    dotenv = build.root / "local.env"
    dotenv.write_text('DEPLOY_KEY=""\n')
    result = subprocess.run(
        [str(BIN / "compile"), str(build.app), str(build.cache), str(dotenv)],
        env=build.environ(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert " !     The variable exists but holds no key." in result.stderr
    assert fix_of(result.stderr) == (
        "Set it to the private key file's content: "
        f'`echo "DEPLOY_KEY=$(base64 -w0 deploy_key)" >> {dotenv}` (a line in the .env file).'
    )
    assert HEROKU not in result.stderr


def doctor(build: Build) -> subprocess.CompletedProcess[str]:
    """`deploykey doctor APP` with no env dir: it reads the app's .env."""
    return subprocess.run(
        [str(BIN / "deploykey"), "doctor", str(build.app)],
        env=build.environ(),
        capture_output=True,
        text=True,
    )


def test_doctor_names_the_apps_dotenv(build: Build) -> None:
    (build.app / ".env").write_text("DEPLOYKEY_DRY_RUN=1\n")
    result = doctor(build)
    assert result.returncode == 1
    assert f" !     No deploy key: {build.app / '.env'} has no DEPLOY_KEY" in result.stderr
    assert fix_of(result.stderr).endswith(
        f'then `echo "DEPLOY_KEY=$(base64 -w0 deploy_key)" >> {build.app / ".env"}` '
        "(a line in the .env file)."
    )
    assert HEROKU not in result.stderr


def test_doctor_finding_names_the_apps_dotenv(build: Build, utils_key: GeneratedKey) -> None:
    """A repository no key opens: the doctor's fix for it is a line in the .env file it read."""
    billing = "billing @ git+ssh://git@github.com/acme/billing.git@v1.0"
    (build.app / "requirements.txt").write_text(f"{billing}\n")
    encoded = base64.b64encode(utils_key.path.read_bytes()).decode()
    (build.app / ".env").write_text(f"DEPLOY_KEY_UTILS={encoded}\n")
    result = doctor(build)
    assert result.returncode == 1
    assert (
        "no key is routed to acme/billing: no DEPLOY_KEY, and no DEPLOY_KEY_<NAME> is mapped to it "
        "or opens it. Fix: add a deploy key for acme/billing as DEPLOY_KEY_<NAME> (`echo "
        f'"DEPLOY_KEY_<NAME>=$(base64 -w0 deploy_key)" >> {build.app / ".env"}` (a line in the '
        ".env file); map it under `keys:`" in result.stderr
    )
    assert HEROKU not in result.stdout + result.stderr
    assert not text_has_key(result.stdout + result.stderr, utils_key.text)
    assert encoded not in result.stdout + result.stderr


# ---------------------------------------------------------------- Docker: deploykey install


def install(build: Build, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "deploykey"), "install", "--venv", str(build.root / "venv"), *args],
        cwd=build.app,
        env=build.environ(**env),
        capture_output=True,
        text=True,
    )


def test_docker_install_says_build_secret(build: Build, keys_dir: Path) -> None:
    result = install(build)
    assert result.returncode == 1
    assert " !     No deploy key" in result.stderr
    assert fix_of(result.stderr).endswith(
        f"then {DOCKER} (never as ARG or ENV: both stay in the image)."
    )
    assert HEROKU not in result.stderr
    key = make_key(keys_dir)
    cut = keys_dir / "cut"
    cut.write_text(truncated(key))
    result = install(build, "--key-file", str(cut))
    assert result.returncode == 1
    assert f" !     {cut} holds an incomplete private key" in result.stderr
    assert fix_of(result.stderr).startswith(
        f"Set DEPLOY_KEY again from the whole key file: {DOCKER}"
    )
    assert HEROKU not in result.stderr
    assert not text_has_key(result.stdout + result.stderr, key.text)


# ---------------------------------------------------------------- CI: deploykey setup


@pytest.mark.parametrize(
    ("ci", "advice"),
    [
        (
            {"GITHUB_ACTIONS": "true", "CI": "true"},
            "store the key file's content as a repository secret DEPLOY_KEY (Settings, Secrets "
            "and variables, Actions) and give it only to the step that runs deploykey: "
            "`env: DEPLOY_KEY: ${{ secrets.DEPLOY_KEY }}`.",
        ),
        (
            {"GITLAB_CI": "true", "CI": "true"},
            "add it as a masked, protected CI/CD variable DEPLOY_KEY (Settings, CI/CD, "
            "Variables): of type Variable holding `base64 -w0 deploy_key` (GitLab masks "
            "single-line values only; deploykey takes base64), or of type File, passed as "
            '`--key-file "$DEPLOY_KEY"`.',
        ),
        (
            {},
            "store the key file's content as a secret (masked) variable DEPLOY_KEY in the CI's "
            "settings, never in the repository, and give it only to the step that runs "
            "deploykey.",
        ),
    ],
    ids=["github", "gitlab", "other"],
)
def test_ci_setup_says_ci_secret(build: Build, ci: dict[str, str], advice: str) -> None:
    result = subprocess.run(
        [str(BIN / "deploykey"), "setup", "--shell"],
        cwd=build.app,
        env=build.environ(DEPLOY_KEY="", **ci),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert " !     the environment variable DEPLOY_KEY is empty" in result.stderr
    assert " !     The " in result.stderr and "exists but holds no key." in result.stderr
    assert fix_of(result.stderr) == "Set it to the private key file's content: " + advice
    assert HEROKU not in result.stderr


def test_install_in_a_ci_job_says_ci_secret(build: Build) -> None:
    """`deploykey install` run by a CI job (not in a Docker build, which passes no CI variable)."""
    result = install(build, GITHUB_ACTIONS="true")
    assert result.returncode == 1
    assert "`env: DEPLOY_KEY: ${{ secrets.DEPLOY_KEY }}`" in fix_of(result.stderr)
    assert "docker build" not in result.stderr and HEROKU not in result.stderr
