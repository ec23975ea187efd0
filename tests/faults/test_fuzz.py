"""Fuzzing every parser of user input: it returns a result or raises UserError, never anything else.

Any other exception is what the CLI reports as "This is a bug" (exit 3); an input that makes a
parser run for seconds hangs a build. Each property takes arbitrary input and structured mutations
of valid files; a crash found here is kept as an @example next to its fix. derandomize=True makes
a CI run reproducible; 300 examples a property keep the whole file under 30 s on 2 CPUs.
"""

from __future__ import annotations

import base64
import json
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import GeneratedKey, image_members, make_key, tar_bytes, text_has_key
from deploykey import manifests
from deploykey.core import output, sources
from deploykey.core.errors import UserError
from deploykey.manifests import requirements
from deploykey.secrets import config, keys

T = TypeVar("T")
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# No single input may take this long: a parser that does is a hang in a build.
BOUND_SECONDS = 5


class Hang(Exception):
    pass


@contextmanager
def bounded(seconds: float = BOUND_SECONDS) -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise Hang(f"the parser ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def result_or_user_error(parse: Callable[[], T]) -> T | UserError:
    """The property: a result, or a UserError whose wording renders; any other exception fails."""
    with bounded():
        try:
            return parse()
        except UserError as error:
            assert error.title and error.why and error.fix  # the wording formats with its facts
            event(error.slug)  # --hypothesis-show-statistics: which errors the inputs reach
            return error


@pytest.fixture(scope="module", autouse=True)
def forget_secrets() -> Iterator[None]:
    """keys.load registers each value it reads for redaction, in a set the whole process shares:
    the fuzzed values must not be redacted from the output of the tests that run after these."""
    before = set(output._secrets)
    yield
    output._secrets.clear()
    output._secrets.update(before)


@contextmanager
def directory() -> Iterator[Path]:
    # Not pytest's tmp_path: hypothesis runs many examples in one test call.
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


# ---------------------------------------------------------------- strategies


def mutated(samples: list[str], fragments: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid sample with a few edits: cut, insert a fragment, duplicate, truncate, swap lines."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        text = draw(st.sampled_from(samples))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["cut", "insert", "insert", "duplicate", "truncate", "swap"]))
            i = draw(st.integers(0, len(text)))
            j = draw(st.integers(i, min(len(text), i + 40)))
            if op == "cut":
                text = text[:i] + text[j:]
            elif op == "insert":
                text = text[:i] + draw(fragments) + text[i:]
            elif op == "duplicate":
                text = text[:j] + text[i:j] + text[j:]
            elif op == "truncate":
                text = text[:i]
            else:
                lines = text.splitlines(keepends=True)
                if len(lines) > 1:
                    a = draw(st.integers(0, len(lines) - 1))
                    b = draw(st.integers(0, len(lines) - 1))
                    lines[a], lines[b] = lines[b], lines[a]
                text = "".join(lines)
        return text

    return build()


PUNCTUATION = st.sampled_from(
    list("\"'[]{}=,:@#/\\?&%.\n\t \r") + ["\x00", "²", "\u2028", "\ufeff", "\\\n", "[::1", "[x"]
)
URL_PARTS = st.tuples(
    st.sampled_from(["ssh://", "git+ssh://", "https://", "git+https://", "http://", "git+", ""]),
    st.sampled_from(["", "git@", "u:p@", "@", "a@b@"]),
    st.sampled_from(["github.com", "GitHub.COM", "h", "[::1]", "[abc", "]", "", "a b"]),
    st.sampled_from(["", ":22", ":2222", ":²", ":١٢", ":acme", ":", ":99999999999999999999"]),
    st.sampled_from(["/acme/x.git", ":acme/x.git", "/", "", "/a/b/c", "/x.git/"]),
    st.sampled_from(["", "@v1", "@", "?tag=v1", "?subdirectory=a%2Fb&rev=x", "#" + "0" * 40]),
    st.sampled_from(["", "#subdirectory=sub", "#egg=x&subdirectory=", "%zz", "?a=[b"]),
)
URLS = URL_PARTS.map("".join)
FRAGMENTS = st.one_of(PUNCTUATION, URLS, st.text(max_size=12))
NAMES = st.sampled_from(["x", "private-utils", "", "Ü", "a b", "-r", "HEAD"])
SCALARS = st.one_of(st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=16), URLS, NAMES)
TOML_KEYS = [
    *("package", "packages", "source", "git", "url", "type", "reference", "resolved_reference"),
    *("subdirectory", "name", "vcs", "requested-revision", "commit-id", "tag", "rev", "branch"),
    *("project", "dependencies", "optional-dependencies", "dependency-groups", "tool", "uv"),
    *("sources", "poetry", "group", "dev-dependencies", "dev-packages", "default", "develop"),
    *("ref", "editable"),
]
VALUES = st.recursive(
    st.one_of(SCALARS, st.just("git"), st.builds(lambda n, u: f"{n} @ {u}", NAMES, URLS)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(st.sampled_from(TOML_KEYS), st.text(max_size=6)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def toml_value(value: Any) -> str:
    """A TOML inline value (TOML's basic strings take JSON's escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if -(2**63) <= value < 2**63 else json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    items = (f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items())
    return "{" + ", ".join(items) + "}"


def toml_document(data: dict[str, Any]) -> str:
    return "".join(
        f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}\n" for k, v in data.items()
    )


def either(expected: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly what the reader expects there, sometimes anything."""
    return st.one_of(expected, expected, VALUES)


def entries(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: either(v) for k, v in fields.items()})


GIT_SPEC = entries(
    git=URLS,
    tag=NAMES,
    rev=NAMES,
    branch=NAMES,
    ref=NAMES,
    subdirectory=NAMES,
    editable=st.booleans(),
)
PEP508 = st.lists(either(st.builds(lambda n, u: f"{n} @ {u}", NAMES, URLS)), max_size=3)
STRUCTURED: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "uv.lock": st.fixed_dictionaries(
        {"package": either(st.lists(entries(name=NAMES, source=entries(git=URLS)), max_size=3))}
    ),
    "poetry.lock": st.fixed_dictionaries(
        {
            "package": either(
                st.lists(
                    entries(
                        name=NAMES,
                        source=entries(
                            type=st.just("git"),
                            url=URLS,
                            reference=NAMES,
                            resolved_reference=NAMES,
                            subdirectory=NAMES,
                        ),
                    ),
                    max_size=3,
                )
            )
        }
    ),
    "pylock.toml": st.fixed_dictionaries(
        {
            "packages": either(
                st.lists(
                    entries(
                        name=NAMES,
                        vcs=entries(
                            type=st.just("git"),
                            url=URLS,
                            **{"requested-revision": NAMES, "commit-id": NAMES},
                            subdirectory=NAMES,
                        ),
                    ),
                    max_size=3,
                )
            )
        }
    ),
    "pyproject.toml": entries(
        project=entries(
            dependencies=PEP508,
            **{"optional-dependencies": st.dictionaries(NAMES, PEP508, max_size=2)},
        ),
        **{"dependency-groups": st.dictionaries(NAMES, PEP508, max_size=2)},
        tool=entries(
            uv=entries(sources=st.dictionaries(NAMES, either(GIT_SPEC), max_size=2)),
            poetry=entries(
                dependencies=st.dictionaries(NAMES, either(GIT_SPEC), max_size=2),
                group=st.dictionaries(
                    NAMES, entries(dependencies=st.dictionaries(NAMES, GIT_SPEC, max_size=2))
                ),
            ),
        ),
    ),
    "Pipfile": entries(
        packages=st.dictionaries(NAMES, either(GIT_SPEC), max_size=3),
        **{"dev-packages": st.dictionaries(NAMES, GIT_SPEC, max_size=2)},
    ),
    "Pipfile.lock": entries(
        default=st.dictionaries(NAMES, either(GIT_SPEC), max_size=3),
        develop=st.dictionaries(NAMES, GIT_SPEC, max_size=2),
    ),
}
SHA = "0123456789abcdef0123456789abcdef01234567"
SAMPLES = {
    "requirements.txt": [
        "private-utils @ git+ssh://git@github.com/acme/private-utils.git@v1.0\n"
        "-e git+ssh://git@github.com/acme/x.git#egg=x \\\n  # comment\n"
        "git+https://github.com/acme/y.git@main#subdirectory=sub\n"
        "git+git@github.com:acme/z.git\n-r other.txt\n--index-url https://example.test\n",
    ],
    "uv.lock": [
        'version = 1\n[[package]]\nname = "x"\nversion = "1.0"\n'
        f'source = {{ git = "ssh://git@github.com/acme/x.git?subdirectory=pkg%2Fx&tag=v1.0#{SHA}" }}\n'
        '[package.metadata]\nrequires-dist = [{ name = "y", git = "ssh://git@github.com/a/y.git" }]\n'
    ],
    "poetry.lock": [
        '[[package]]\nname = "x"\nversion = "1.0"\n[package.source]\ntype = "git"\n'
        'url = "git@github.com:acme/x.git"\nreference = "HEAD"\n'
        f'resolved_reference = "{SHA}"\nsubdirectory = "sub"\n'
    ],
    "pylock.toml": [
        'lock-version = "1.0"\n[[packages]]\nname = "x"\n[packages.vcs]\ntype = "git"\n'
        f'url = "ssh://git@github.com/acme/x.git"\nrequested-revision = "v1"\ncommit-id = "{SHA}"\n'
    ],
    "pyproject.toml": [
        '[project]\nname = "app"\ndependencies = ["x @ git+ssh://git@github.com/acme/x.git@v1"]\n'
        '[project.optional-dependencies]\ne = ["y @ git+https://github.com/acme/y.git"]\n'
        '[dependency-groups]\ndev = ["z @ git+ssh://git@h:2222/z.git", {include-group = "e"}]\n'
        '[tool.uv.sources]\nw = { git = "ssh://git@github.com/acme/w.git", tag = "v1" }\n'
        '[tool.poetry.dependencies]\np = [{ git = "git@github.com:acme/p.git", branch = "b" }]\n'
        '[tool.poetry.group.dev.dependencies]\nq = { git = "https://github.com/acme/q.git" }\n'
    ],
    "Pipfile": [
        '[packages]\nx = {git = "ssh://git@github.com/acme/x.git", ref = "v1", editable = true}\n'
        '[dev-packages]\ny = {git = "git@github.com:acme/y.git", subdirectory = "s"}\n'
    ],
    "Pipfile.lock": [
        json.dumps(
            {
                "_meta": {},
                "default": {"x": {"git": "ssh://git@github.com/acme/x.git", "ref": SHA}},
                "develop": {"y": {"git": "git@github.com:acme/y.git", "editable": True}},
            },
            indent=4,
        )
    ],
    "setup.cfg": [
        "[metadata]\nname = app\n[options]\ninstall_requires =\n"
        "    x @ git+ssh://git@github.com/acme/x.git@v1  # pinned\n    requests\n"
        "[options.extras_require]\ndev = y @ git+https://github.com/acme/y.git\n"
    ],
}


# ---------------------------------------------------------------- requirements files, manifests


def parse_file(name: str, text: str) -> object:
    """As a build reads the file from the app dir, and as discovery reads it from a repository."""
    with directory() as app:
        (app / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        (app / "other.txt").write_text(
            "y @ git+ssh://git@github.com/acme/y.git\n-r requirements.txt\n"
        )
        reader = manifests.reader_for(name)
        assert reader is not None
        result_or_user_error(lambda: reader.read(app, app / name))
        result_or_user_error(lambda: manifests.read_all(app))  # and merged with the others
        result_or_user_error(lambda: requirements.detect(app))  # bin/detect
    result_or_user_error(lambda: manifests.read_repository_file(name, text))  # a dependency's
    found = result_or_user_error(lambda: reader.parse(name, text))
    if isinstance(found, requirements.Requirements):
        use_requirements(found)
    return found


def use_requirements(found: requirements.Requirements) -> None:
    """What a build asks of each requirement found: none of it may fail on what the file said."""
    with bounded():
        for req in found.git + found.https:
            assert req.remote and req.host_port and req.written_hosts and req.where
            assert req.pinned("0" * 40)
        for problem in found.problems:
            assert problem.title and problem.why and problem.fix
        assert found.hosts is not None and found.uses_ssh in (True, False)


@FUZZ
@given(text=st.one_of(st.text(), mutated(SAMPLES["requirements.txt"], FRAGMENTS)))
@example(text="x @ git+ssh://git@github.com:²/acme/x.git")  # str.isdigit() takes ², int() not
@example(text="-r " + "a" * 300)  # a name too long for the file system
@example(text="-r a\x00b")
def test_requirements(text: str) -> None:
    parse_file("requirements.txt", text)
    found = result_or_user_error(lambda: requirements.read_text("requirements.txt", text))
    if isinstance(found, requirements.Requirements):
        use_requirements(found)


MANIFESTS = [
    "uv.lock",
    "poetry.lock",
    "pylock.toml",
    "pyproject.toml",
    "Pipfile",
    "Pipfile.lock",
    "setup.cfg",
]


@FUZZ
@given(name=st.sampled_from(MANIFESTS), text=st.text())
@example(name="pyproject.toml", text="a = " + "[" * 5000 + "]" * 5000)  # RecursionError in tomllib
@example(name="Pipfile.lock", text="[" * 100_000 + "]" * 100_000)  # and in json
@example(name="uv.lock", text='[[package]]\nname = "x"\nsource = { git = "ssh://[abc/x" }\n')
@example(name="pyproject.toml", text='[tool.uv.sources]\nx = { git = "ssh://git@h:²/x.git" }\n')
def test_manifests_arbitrary_text(name: str, text: str) -> None:
    parse_file(name, text)


@FUZZ
@given(data=st.data(), name=st.sampled_from(MANIFESTS))
def test_manifests_mutated(data: st.DataObject, name: str) -> None:
    parse_file(name, data.draw(mutated(SAMPLES[name], FRAGMENTS)))


@FUZZ
@given(data=st.data(), name=st.sampled_from(sorted(STRUCTURED)))
def test_manifests_structured(data: st.DataObject, name: str) -> None:
    """Documents with the tables each reader looks in, holding random values where it looks."""
    document = data.draw(STRUCTURED[name])
    parse_file(name, json.dumps(document) if name == "Pipfile.lock" else toml_document(document))


# ---------------------------------------------------------------- env dirs, .env files, bindings

VARIABLES = st.one_of(
    st.sampled_from(
        ["DEPLOY_KEY", "DEPLOY_KEY_BILLING", "DEPLOY_KEY_", "deploy_key", "GITHUB_TOKEN", "a-b"]
        + [setting.name for setting in config.SETTINGS]
    ),
    st.text(
        st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=12
    ).filter(lambda n: n not in (".", "..")),
)
SETTING_VALUES = st.one_of(
    st.sampled_from(["auto", "UV", " pip\n", "off", "1", "yes", "", "\x00", "é"]),
    st.text(max_size=8),
)
VALUE_BYTES = st.one_of(st.binary(max_size=64), SETTING_VALUES.map(lambda v: v.encode()))


def use_source(env: sources.EnvSource) -> None:
    """What a command does with a source: its settings, and each key in it."""
    with directory() as app:
        result_or_user_error(lambda: config.load(app, env, {}))
    for name in env.key_names():
        value = env.get(name)
        assert value is not None
        where = env.describe(name)
        result_or_user_error(lambda v=value, n=name, w=where: keys.load(v, n, w))


@FUZZ
@given(
    files=st.dictionaries(VARIABLES, VALUE_BYTES, max_size=5),
    bindings=st.dictionaries(
        st.text(
            st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=8
        ).filter(lambda n: n not in (".", "..")),
        st.tuples(
            st.one_of(
                st.sampled_from([b"ssh-auth\n", b"kubernetes.io/ssh-auth"]), st.binary(max_size=8)
            ),
            VALUE_BYTES,
        ),
        max_size=3,
    ),
)
@example(files={}, bindings={"deploy-key": (b"\xff", b"x")})  # a type that is not UTF-8
def test_env_dir_and_bindings(
    files: dict[str, bytes], bindings: dict[str, tuple[bytes, bytes]]
) -> None:
    with directory() as root:
        env_dir, bound = root / "env", root / "bindings"
        env_dir.mkdir()
        (env_dir / "DEPLOY_KEY_DIR").mkdir()  # a directory where a file is expected
        for name, value in files.items():
            (env_dir / name).write_bytes(value)
        for name, (kind, secret) in bindings.items():
            (bound / name).mkdir(parents=True)
            (bound / name / "type").write_bytes(kind)
            (bound / name / "ssh-privatekey").write_bytes(secret)
        found = result_or_user_error(lambda: sources.read(env_dir).with_bindings(bound))
        if isinstance(found, sources.EnvSource):
            use_source(found)


DOTENV_LINES = st.lists(
    st.one_of(
        st.builds(
            lambda export, name, quote, value: f"{export}{name}={quote}{value}{quote}",
            st.sampled_from(["", "export ", "  "]),
            VARIABLES,
            st.sampled_from(["", "'", '"']),
            st.one_of(SETTING_VALUES, st.text(max_size=20)),
        ),
        st.sampled_from(["# comment", "", "=", "A", "A=\\", 'A="open', "A=${B}", "A='a\nb'"]),
        st.text(max_size=20),
    ),
    max_size=6,
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.one_of(st.binary(), DOTENV_LINES, DOTENV_LINES.map(lambda b: b + b"\xff\xfe")))
@example(data=b"DEPLOY_KEY=\xff\xfe\n")  # not UTF-8: UnicodeDecodeError in python-dotenv
@example(data=b"# caf\xe9 (Latin-1)\nDEPLOYKEY_INSTALL=venv\n")
def test_dotenv_file(data: bytes) -> None:
    with directory() as root:
        (root / ".env").write_bytes(data)
        found = result_or_user_error(lambda: sources.read(root / ".env"))
        if isinstance(found, sources.EnvSource):
            use_source(found)


@FUZZ
@given(
    environ=st.dictionaries(
        VARIABLES, SETTING_VALUES.filter(lambda v: "\x00" not in v), max_size=3
    ),
    secrets=st.dictionaries(
        st.one_of(st.sampled_from(["deploy_key", "deploy-key-billing", "GITHUB_TOKEN"]), VARIABLES),
        VALUE_BYTES,
        max_size=3,
    ),
    key_files=st.one_of(  # mostly none: a missing one (env::missing) stops the rest
        st.just([]),
        st.just([]),
        st.lists(st.sampled_from(["secrets/deploy_key", "missing", "secrets", ""]), max_size=2),
    ),
)
def test_gathered_for_docker_and_ci(
    environ: dict[str, str], secrets: dict[str, bytes], key_files: list[str]
) -> None:
    """Docker and CI: environment variables, BuildKit secrets in /run/secrets, key files."""
    with directory() as root:
        (root / "secrets").mkdir()
        for name, value in secrets.items():
            (root / "secrets" / name).write_bytes(value)
        files = tuple(str(root / file) for file in key_files)
        found = result_or_user_error(
            lambda: sources.gather(environ, ("GITHUB_TOKEN",), None, files, root / "secrets")
        )
        if isinstance(found, sources.EnvSource):
            use_source(found)


# ---------------------------------------------------------------- deploykey.yml and settings

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
YML = (
    "hosts:\n  git.example.test:\n    hostname: 127.0.0.1\n    port: 2222\n    user: git\n"
    f"    known_hosts:\n      - {HOST_KEY}\n      - '[h]:22 {HOST_KEY}'\n"
    "  gitlab.com: {port: 22}\n"
    "keys:\n  DEPLOY_KEY: [acme/private-utils, acme/*]\n  DEPLOY_KEY_BILLING: gitlab.com/group/x\n"
    "tokens:\n  GITHUB_TOKEN: github.com\n  MY_TOKEN: {host: 'git.example.test:8443', username: u}\n"
)
YAML_FRAGMENTS = st.one_of(
    FRAGMENTS,
    st.sampled_from(
        [
            "&a ",
            "*a",
            "!!binary ",
            "!!set ",
            "? ",
            "- ",
            "{",
            "[",
            "|\n",
            ">-\n",
            "~",
            "0x1F",
            "1e9",
        ]
        + ["-----BEGIN OPENSSH PRIVATE KEY-----", "!!python/object:os.system ", "%YAML 1.1\n---\n"]
    ),
)
YAML_VALUES = st.recursive(
    st.one_of(SCALARS, st.none(), st.floats(allow_nan=False), st.just(HOST_KEY)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["hosts", "keys", "tokens", *config.HOST_FIELDS, "host"]),
                st.sampled_from(["username", "DEPLOY_KEY", "GITHUB_TOKEN", "github.com"]),
                SCALARS,
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=15,
)
# Nine lists of nine aliases of the one before: a graph of 9**9 strings in a few hundred bytes.
LAUGHS = "keys:\n  DEPLOY_KEY:\n    - &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)
# The same graph as one list, the entry of a list.
TOWER = (
    "[&a0 [x, x, x, x, x, x, x, x, x], "
    + "".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}], " for i in range(1, 10))
    + "]"
)


def load_yml(text: str) -> None:
    with directory() as app:
        (app / config.CONFIG_FILE).write_text(text, encoding="utf-8", errors="surrogatepass")
        result_or_user_error(lambda: config.load(app, None, {}))


@FUZZ
@given(text=st.one_of(st.text(), mutated([YML, LAUGHS], YAML_FRAGMENTS)))
@example(text="keys:\n  DEPLOY_KEY: [" + "[" * 5000 + "]" * 5000 + "]\n")  # RecursionError
@example(text=LAUGHS)  # repr() of the alias graph never ended
@example(text=f"keys:\n  DEPLOY_KEY: [{TOWER}]\n")  # one entry: its repr() in the error text
@example(text=f"hosts:\n  h:\n    known_hosts: [{TOWER}]\n")  # and its str() as a line
def test_deploykey_yml_text(text: str) -> None:
    load_yml(text)


@FUZZ
@given(data=st.one_of(YAML_VALUES, st.dictionaries(st.sampled_from(config.SECTIONS), YAML_VALUES)))
def test_deploykey_yml_structured(data: object) -> None:
    load_yml(yaml.safe_dump(data, allow_unicode=True))


@FUZZ
@given(environ=st.dictionaries(st.sampled_from([s.name for s in config.SETTINGS]), SETTING_VALUES))
def test_settings(environ: dict[str, str]) -> None:
    with directory() as app:
        result_or_user_error(lambda: config.load(app, None, environ))


# ---------------------------------------------------------------- keys


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GeneratedKey]:
    """Keys made at run time, one per format users paste: none is ever committed."""
    directory = tmp_path_factory.mktemp("fuzz-keys")
    return {
        "ed25519": make_key(directory),
        "rsa-pem": make_key(directory, "rsa", fmt="PEM"),
        "ecdsa-pkcs8": make_key(directory, "ecdsa", fmt="PKCS8"),
    }


def refuse_without_echo(value: bytes, key_text: str) -> None:
    """keys.load returns a Key or a UserError, and no error text holds a line of the key's body."""
    found = result_or_user_error(lambda: keys.load(value, "DEPLOY_KEY", "ENV_DIR/DEPLOY_KEY"))
    if isinstance(found, UserError):
        shown = "\n".join([str(found), found.title, found.why, found.fix, repr(found.facts)])
        body = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
        assert not [line for line in body if line in shown], "the error shows key material"
        assert not text_has_key(shown, key_text)
    else:
        assert key_text.splitlines()[2] not in repr(found)


FRACTION = st.integers(0, 1000).map(lambda n: n / 1000)
JUNK = st.one_of(
    st.sampled_from(["\n", "x", "\x00", "é", "-----END OPENSSH PRIVATE KEY-----", "=", " \t"]),
    st.text(max_size=12),
)
OPS = st.one_of(
    st.tuples(st.just("truncate"), FRACTION),
    st.tuples(st.just("cut"), FRACTION, st.integers(1, 80)),
    st.tuples(st.just("rewrap"), st.integers(1, 200)),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("base64"), st.integers(0, 100)),
    st.tuples(st.just("urlsafe")),
    st.tuples(st.just("prepend"), JUNK),
    st.tuples(st.just("append"), JUNK),
    st.tuples(st.just("insert"), FRACTION, JUNK),
    st.tuples(st.just("literal-newlines")),
    st.tuples(st.just("spaces")),
    st.tuples(st.just("quote"), st.sampled_from(["'", '"'])),
    st.tuples(st.just("indent"), st.sampled_from([" ", "    ", "\t"])),
    st.tuples(st.just("drop-line"), FRACTION),
    st.tuples(st.just("duplicate-line"), FRACTION),
    st.tuples(st.just("label"), st.sampled_from(["RSA", "DSA", "EC", "ENCRYPTED", "OPENSSH", "X"])),
    st.tuples(st.just("bom")),
    st.tuples(st.just("twice")),
)


def mutate(text: str, program: list[tuple[Any, ...]]) -> str:
    """Apply the edits a copy, a paste or a CI variable makes to a key file."""
    for op, *args in program:
        lines = text.split("\n")
        at = int(args[0] * len(text)) if args and isinstance(args[0], float) else 0
        if op == "truncate":
            text = text[:at]
        elif op == "cut":
            text = text[:at] + text[at + args[1] :]
        elif op == "rewrap":
            body = "".join(line for line in lines if not line.startswith("-----"))
            wrapped = [body[i : i + args[0]] for i in range(0, len(body), args[0])]
            ends = [line for line in lines if line.startswith("-----")]
            text = "\n".join(ends[:1] + wrapped + ends[1:]) + "\n"
        elif op == "crlf":
            text = text.replace("\n", "\r\n")
        elif op == "base64":
            encoded = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()
            width = args[0] or len(encoded) or 1
            text = "\n".join(encoded[i : i + width] for i in range(0, len(encoded), width))
        elif op == "urlsafe":
            text = base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()
        elif op == "prepend":
            text = args[0] + text
        elif op == "append":
            text = text + args[0]
        elif op == "insert":
            text = text[:at] + args[1] + text[at:]
        elif op == "literal-newlines":
            text = text.replace("\n", "\\n")
        elif op == "spaces":
            text = text.replace("\n", " ")
        elif op == "quote":
            text = args[0] + text + args[0]
        elif op == "indent":
            text = "\n".join(args[0] + line for line in lines)
        elif op in ("drop-line", "duplicate-line"):
            index = min(int(args[0] * len(lines)), len(lines) - 1)
            if op == "drop-line":
                del lines[index]
            else:
                lines.insert(index, lines[index])
            text = "\n".join(lines)
        elif op == "label":
            text = text.replace("OPENSSH PRIVATE", f"{args[0]} PRIVATE")
            text = text.replace("-----BEGIN PRIVATE", f"-----BEGIN {args[0]} PRIVATE")
        elif op == "bom":
            text = "\ufeff" + text
        else:  # twice
            text = text + text
    return text


@FUZZ
@given(
    kind=st.sampled_from(["ed25519", "rsa-pem", "ecdsa-pkcs8"]), program=st.lists(OPS, max_size=4)
)
@example(kind="ed25519", program=[("truncate", 0.5)])
@example(kind="rsa-pem", program=[("rewrap", 7), ("crlf",), ("base64", 76)])
@example(kind="ed25519", program=[("base64", 0), ("base64", 0), ("base64", 0)])
@example(kind="ed25519", program=[("twice",)])
@example(kind="ecdsa-pkcs8", program=[("append", "junk"), ("quote", "'"), ("literal-newlines",)])
def test_key_mutations(
    generated: dict[str, GeneratedKey], kind: str, program: list[tuple[Any, ...]]
) -> None:
    key_text = generated[kind].text
    refuse_without_echo(mutate(key_text, program).encode("utf-8", "surrogatepass"), key_text)


PEM_LIKE = st.builds(
    lambda label, body, end: f"-----BEGIN {label}-----\n{body}\n{end}",
    st.sampled_from(
        ["OPENSSH PRIVATE KEY", "RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "X"]
    ),
    st.one_of(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n :"),
        st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
        st.binary(max_size=200).map(lambda b: base64.b64encode(b"openssh-key-v1\0" + b).decode()),
        st.binary(max_size=200).map(lambda b: base64.b64encode(b"\x30" + b).decode()),
    ),
    st.sampled_from(["-----END OPENSSH PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", ""]),
)


@FUZZ
@given(
    value=st.one_of(
        st.binary(),
        st.text().map(lambda t: t.encode("utf-8", "surrogatepass")),
        PEM_LIKE.map(str.encode),
        PEM_LIKE.map(lambda t: base64.b64encode(t.encode())),
    )
)
@example(value=b"")
@example(value=b"ssh-ed25519 AAAA")
@example(value=b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n")
def test_key_arbitrary_bytes(value: bytes) -> None:
    result_or_user_error(lambda: keys.load(value, "DEPLOY_KEY", "ENV_DIR/DEPLOY_KEY"))


# ---------------------------------------------------------------- image archives (scan-image)


@pytest.fixture(scope="module")
def image_searcher(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from deploykey.leak.scan import Searcher

    key = make_key(tmp_path_factory.mktemp("image-key"))
    return Searcher.of([keys.load(key.path.read_bytes(), "DEPLOY_KEY", "test")])


def _scan_image(searcher: Any, data: bytes) -> None:
    from deploykey.leak import image

    with tempfile.TemporaryDirectory() as temporary:
        path = Path(temporary) / "image.tar"
        path.write_bytes(data)
        result_or_user_error(lambda: image.scan_archive(path, searcher))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=10)
    | st.sampled_from(
        [
            "sha256:00",
            "blobs/x",
            "config.json",
            "0/layer.tar",
            "application/vnd.oci.image.index.v1+json",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "manifests",
                    "digest",
                    "mediaType",
                    "config",
                    "layers",
                    "Config",
                    "Layers",
                    "rootfs",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)
LAYERS = st.one_of(
    st.just(tar_bytes({"a": b"x"})),
    st.just(tar_bytes({"a": b"x"}, True)),
    st.binary(max_size=64),
    st.just(tar_bytes({"a": b"x"}, True)[:20]),
    st.just(tar_bytes({"a": b"x"})[:700]),
    st.just(b"BZh9" + b"\0" * 20),
    st.just(b"\xfd7zXZ\x00" + b"\0" * 20),
    st.just(b"\x1f\x8b" + b"\0" * 30),
)
# An OCI index that names itself (digests are never checked against content).
LOOP = {
    "index.json": json.dumps({"manifests": [{"digest": "sha256:loop"}]}).encode(),
    "blobs/sha256/loop": json.dumps(
        {
            "manifests": [
                {"digest": "sha256:loop", "mediaType": "application/vnd.oci.image.index.v1+json"}
            ]
        }
    ).encode(),
}


@FUZZ
@given(
    layers=st.lists(LAYERS, max_size=2),
    config_value=st.one_of(JSON_VALUES, st.binary(max_size=20)),
    docker=st.booleans(),
    replace=st.dictionaries(
        st.sampled_from(["index.json", "manifest.json", "config.json", "extra"]),
        st.one_of(
            JSON_VALUES.map(lambda value: json.dumps(value).encode()), st.binary(max_size=20)
        ),
        max_size=2,
    ),
)
@example(layers=[], config_value={}, docker=False, replace={"index.json": b"[]"})
@example(layers=[], config_value={}, docker=False, replace={"index.json": b"\xa4"})
@example(layers=[], config_value={}, docker=True, replace={"manifest.json": b'[{"Config": "c"}]'})
@example(layers=[b"junk"], config_value={}, docker=True, replace={})
def test_image_archives(
    image_searcher: Any,
    layers: list[bytes],
    config_value: object,
    docker: bool,
    replace: dict[str, bytes],
) -> None:
    members = image_members(layers, config_value, docker)
    members.update(
        {name: data for name, data in replace.items() if name != "index.json" or not docker}
    )
    _scan_image(image_searcher, tar_bytes(members))


@FUZZ
@given(
    docker=st.booleans(),
    cut=st.integers(0, 10000),
    flips=st.lists(st.tuples(st.integers(0, 10000), st.integers(0, 255)), max_size=4),
)
@example(docker=False, cut=512, flips=[])
def test_image_archive_bytes(
    image_searcher: Any, docker: bool, cut: int, flips: list[tuple[int, int]]
) -> None:
    layer = tar_bytes({"a": b"x"}, True)
    data = bytearray(
        tar_bytes(image_members([layer], {"rootfs": {"diff_ids": ["sha256:1"]}}, docker))
    )
    for at, value in flips:
        data[at % len(data)] = value
    _scan_image(image_searcher, bytes(data[: max(cut, 1)] if cut < len(data) else data))


def test_an_index_that_names_itself(image_searcher: Any) -> None:
    _scan_image(image_searcher, tar_bytes(LOOP))
