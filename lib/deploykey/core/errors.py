"""Every user-facing failure, in one place: a title, why it happened, how to fix it.

A failure is raised as ``UserError(slug, **facts)``; the facts are real values (paths, variable
names, fingerprints), never key material. ``cli`` renders it once through ``output`` and maps it to
an exit code: 1 user-fixable, 2 usage, 3 internal bug. The one part of the wording that differs by
platform, how to set (or replace) a key, comes from the Platform the command's entry point named
(`use`): a fix says `{set_key}`, never one platform's command. This module imports nothing but the
standard library so that the bootstrap can use it before the kit's dependencies are importable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_BUG = 3

ISSUES_URL = "https://github.com/deploykey/deploykey/issues"


@dataclass(frozen=True)
class Problem:
    title: str
    why: str
    fix: str
    exit_code: int = EXIT_USER


@dataclass(frozen=True)
class Platform:
    """Where the command runs, for the one part of the advice that differs by platform: how the
    user gives the build a key. A Problem says `{setting}` for what holds a key there and
    `{set_key}` for how to set it, a template of its own: `{name}` is the key's variable
    (DEPLOY_KEY or DEPLOY_KEY_<NAME>), `{id}` the same in lower case (a BuildKit secret id),
    `{binding}` a binding's name. Each entry point names its platform once (`use`)."""

    name: str
    setting: str
    set_key: str

    def facts(self, name: str) -> dict[str, str]:
        # A binding named deploy-key gives DEPLOY_KEY, billing gives DEPLOY_KEY_BILLING (sources).
        binding = "deploy-key" if name == "DEPLOY_KEY" else name[len("DEPLOY_KEY_") :]
        set_key = self.set_key.format(
            name=name, id=name.lower(), binding=binding.lower().replace("_", "-")
        )
        return {"setting": self.setting, "set_key": set_key}


PLATFORMS: dict[str, Platform] = {
    # Heroku classic (bin/compile) and the app hooks: config vars, which reach the build as ENV_DIR.
    "heroku": Platform("heroku", "config var", '`heroku config:set {name}="$(cat deploy_key)"`'),
    # `deploykey fetch` (or a one-step `install`) in a Dockerfile: sources.gather reads
    # /run/secrets/<id>, where BuildKit
    # mounts `--mount=type=secret,id=<id>` (examples/docker/Dockerfile: id=deploy_key).
    "docker": Platform(
        "docker",
        "build secret",
        "pass the key file as a BuildKit secret, `docker build --secret id={id},src=deploy_key .`, "
        "read in the Dockerfile by `RUN --mount=type=secret,id={id} python3 deploykey.pyz fetch "
        "...` (never as ARG or ENV: both stay in the image)",
    ),
    # GitHub Actions: a repository secret reaches a step only through its `env:`.
    "github": Platform(
        "github",
        "secret",
        "store the key file's content as a repository secret {name} (Settings, Secrets and "
        "variables, Actions) and give it only to the step that runs deploykey: "
        "`env: {name}: ${{{{ secrets.{name} }}}}`",
    ),
    # GitLab masks single-line values only, and a File variable holds the path of a file.
    "gitlab": Platform(
        "gitlab",
        "CI/CD variable",
        "add it as a masked, protected CI/CD variable {name} (Settings, CI/CD, Variables): of type "
        "Variable holding `base64 -w0 deploy_key` (GitLab masks single-line values only; "
        'deploykey takes base64), or of type File, passed as `--key-file "${name}"`',
    ),
    "ci": Platform(
        "ci",
        "secret variable",
        "store the key file's content as a secret (masked) variable {name} in the CI's settings, "
        "never in the repository, and give it only to the step that runs deploykey",
    ),
    # cnb.py reads `$CNB_PLATFORM_DIR/env/DEPLOY_KEY*` and service bindings of type ssh-auth. Heroku
    # Fir runs CNB and gives config vars as that platform env; nothing here tells it from `pack`.
    "cnb": Platform(
        "cnb",
        "binding or platform env var",
        "give it as a service binding of type ssh-auth: `mkdir -p bindings/{binding}; printf "
        "ssh-auth > bindings/{binding}/type; cp deploy_key bindings/{binding}/ssh-privatekey`, then "
        '`pack build ... --volume "$PWD/bindings/{binding}:/platform/bindings/{binding}"` (or '
        '`{name}="$(cat deploy_key)" pack build ... --env {name}`; Heroku Fir, a CNB platform, '
        "gives the build its config vars as platform env: set a config var {name} there)",
    ),
}


def local(env: str | None) -> Platform:
    """A developer's machine (`bin/compile ... --dry-run`, a .env file, `deploykey doctor`): the key
    goes into the env dir or .env file the command reads (base64 keeps a .env value one line)."""
    path = (env or ".env").replace("{", "{{").replace("}", "}}")  # set_key is a template
    dotenv = '`echo "{name}=$(base64 -w0 deploy_key)" >> ' + path + "`"
    if env is not None and Path(env).is_dir():
        how = "`cp deploy_key " + path + "/{name}` (a file in the env dir)"
    elif env is not None:
        how = dotenv + " (a line in the .env file)"
    else:
        how = dotenv + " (a line in the app's .env file; or a file {name} in the env dir given)"
    return Platform("local", "variable", how)


_platform = PLATFORMS["heroku"]


def use(platform: Platform) -> None:
    """Set once by each command's entry point: the advice of every error after it is worded for it."""
    global _platform
    _platform = platform


def current() -> Platform:
    return _platform


ROTATE = (
    "Treat the key as exposed: create a new deploy key, add its public half to the repository, "
    "replace DEPLOY_KEY with it ({set_key}), then delete the old key on the git host. A GitHub "
    "App's key: generate a new one on the App's page (General, Private keys), set it as "
    "GITHUB_APP_PRIVATE_KEY, then delete the old one there."
)

PROBLEMS: dict[str, Problem] = {
    "usage": Problem(
        title="{message}",
        why="The command line does not match what the command takes.",
        fix="Run `{command} --help` for the usage.",
        exit_code=EXIT_USAGE,
    ),
    "env::missing": Problem(
        title="The env dir {path} does not exist",
        why="deploykey reads DEPLOY_KEY from the platform's env dir (Heroku passes it as the third "
        "argument of bin/compile) or from a .env file.",
        fix="Pass an existing directory holding one file per config var, or a .env file.",
    ),
    "env::unreadable": Problem(
        title="The env dir {path} cannot be read",
        why="{reason}",
        fix="Make {path} readable by the user running the build (uid {uid}).",
    ),
    "env::dotenv": Problem(
        title="{path}:{line} cannot be read as a .env line",
        why="python-dotenv stops at line {line}: a quoted value whose closing quote is missing "
        "(`NAME='...` with no `'` after it), or a line that is not `NAME=value`; the variables "
        "after it would be read wrongly or not at all. The line is not shown: it may hold a secret.",
        fix="Close the quote or correct the line. A key is best written on one line, as base64: "
        '`echo "DEPLOY_KEY=$(base64 -w0 deploy_key)" >> {path}`.',
    ),
    "env::not-set": Problem(
        title="ENV_DIR is not set in the {hook} hook",
        why="heroku-buildpack-python runs app hooks with ENV_DIR pointing at the config vars; "
        "deploykey reads DEPLOY_KEY from that directory as a file, because the exported variable "
        "has lost the final newline OpenSSH needs.",
        fix="Run the hook from heroku-buildpack-python, or set ENV_DIR to a directory (or .env file) "
        "holding DEPLOY_KEY.",
    ),
    "cnb::arguments": Problem(
        title="{command}: the argument for {name} is {argument}, but {name} is {variable}",
        why="A Cloud Native Buildpacks lifecycle passes the same directories as arguments and as "
        "CNB_* variables; they disagree, so this is not the lifecycle's call.",
        fix="Run the buildpack through a lifecycle (pack, kpack, Heroku), or pass the arguments "
        "the CNB_* variables name.",
        exit_code=EXIT_USAGE,
    ),
    "cnb::fetched-key": Problem(
        title="DEPLOYKEY_FETCHED is set, and so is {names}",
        why="With DEPLOYKEY_FETCHED the key stays outside the build container: the mirrors come "
        "from `deploykey fetch` run where the key is. A key in the platform env or a binding is "
        "readable by every later buildpack's build code, which this mode exists to prevent.",
        fix="Give the key only to `deploykey fetch` on your machine or CI job: drop `--env {names}` "
        "and its binding from `pack build`.",
    ),
    "cnb::fetched-missing": Problem(
        title="DEPLOYKEY_FETCHED names {path}, which holds no record of a fetch",
        why="deploykey's buildpack installs from the mirrors `deploykey fetch --cache-dir DIR` left "
        "in DIR, mounted into the build; {path} has no `fetched.json` (the mount is missing, or "
        "names another directory).",
        fix="Run `deploykey fetch --cache-dir DIR` in the app dir with the key, then `pack build "
        '--volume "DIR:{path}:ro"` with the same DIR.',
    ),
    "cnb::fetched-unreadable": Problem(
        title="The build user cannot copy what `deploykey fetch` left in {path}",
        why="deploykey's buildpack copies the mounted mirrors into its layer, as the build user "
        "(not root): {detail}.",
        fix="Make DIR readable by everyone before `pack build` (`chmod -R a+rX DIR`): it holds "
        "the private source and no key.",
    ),
    "cnb::fetched-stale": Problem(
        title="What `deploykey fetch` recorded in {path} does not fit this build",
        why="{detail}.",
        fix="Run `deploykey fetch --cache-dir DIR` again in the app dir as it is now (the same "
        "requirements), then `pack build` with DIR mounted.",
    ),
    "cache::not-set": Problem(
        title="CACHE_DIR is not set (or not a directory) in the {hook} hook",
        why="pre_compile fetches the private repositories into mirrors in the build cache, where "
        "the install that follows reads them; heroku-buildpack-python exports CACHE_DIR to its "
        "hooks (bin/compile).",
        fix="Run the hook from heroku-buildpack-python, or set CACHE_DIR to an existing directory "
        "that the rest of the build can read.",
    ),
    "secret::unreadable": Problem(
        title="The secret {path} is readable only by {owner}; deploykey runs as {user} (uid {uid})",
        why="The file exists, with mode {mode}. BuildKit mounts a secret as root with mode 0400 "
        "unless the mount says otherwise, and this RUN runs as {user} (the Dockerfile's USER).",
        fix="Mount the secret for that user: `RUN --mount=type=secret,id={id},uid={uid} ...` "
        "(one `uid=` per secret mount). Outside Docker, make {path} readable by {user}.",
    ),
    "cache::unwritable": Problem(
        title="The cache dir {path} is not writable by {user} (uid {uid})",
        why="{blocker} is owned by {owner} with mode {mode}. deploykey keeps its own "
        "dependencies, uv, the installers' caches and the mirrors of the private repositories "
        "there. BuildKit makes a cache mount owned by root unless the mount says `uid=`, and this "
        "RUN runs as {user} (the Dockerfile's USER).",
        fix="Give the cache mount that user and an id of its own, so that root's and {user}'s "
        "builds never share one:\n"
        "RUN --mount=type=cache,id=deploykey-{uid},target={path},uid={uid} ...\n"
        "Outside Docker: make {path} writable by {user}, or point --cache-dir "
        "(DEPLOYKEY_CACHE_DIR) at a directory that is.",
    ),
    "cache::read-only": Problem(
        title="The cache dir {path} is on a read-only file system",
        why="{mount} is mounted read-only. deploykey keeps there the mirrors of the private "
        "repositories, which a later step reads (`install --fetched`, the next CI job), and the "
        "installers' caches.",
        fix="Mount the cache read-write: `RUN --mount=type=cache,target={path} ...` without "
        "`readonly`; a volume without `:ro`. Or point --cache-dir (DEPLOYKEY_CACHE_DIR) at a "
        "writable directory.",
    ),
    "disk::full": Problem(
        title="No space left on the disk of {path}",
        why="git could not write the mirror of {what}: the file system holding {path} is full. "
        "It has {free} free of {total} once git removed what it had written of the mirror: less "
        "than the repository needs. deploykey keeps a mirror of each private "
        "repository there (the build cache), and fetched nothing more; the keys were removed.",
        fix="Free space on that file system or give the build a larger one; or keep the cache "
        "elsewhere (--cache-dir, DEPLOYKEY_CACHE_DIR). On Heroku, clear the build cache "
        "(`heroku builds:cache:purge`, from the heroku-builds plugin); with a BuildKit cache "
        "mount, `docker builder prune --filter type=exec.cachemount`.",
    ),
    "key::missing": Problem(
        title="No deploy key: {source} has no {name}",
        why="deploykey needs the private half of a deploy key to fetch private git dependencies.",
        fix="Create a key with `ssh-keygen -t ed25519 -N '' -f deploy_key`, add deploy_key.pub as a "
        "read-only deploy key of the repository, then {set_key}.",
    ),
    "key::empty": Problem(
        title="{source} is empty",
        why="The {setting} exists but holds no key.",
        fix="Set it to the private key file's content: {set_key}.",
    ),
    "key::public": Problem(
        title="{source} holds a public key, not a private key",
        why="It starts with `{keytype}`: that is the .pub half ({fingerprint}). ssh needs the "
        "private half to authenticate.",
        fix="Set {name} to the content of the file without .pub (it starts with "
        "`-----BEGIN OPENSSH PRIVATE KEY-----`); the .pub content goes to the repository's deploy "
        "keys.",
    ),
    "key::putty": Problem(
        title="{source} holds a PuTTY key (.ppk)",
        why="OpenSSH cannot read PuTTY's key format.",
        fix="Convert it: `puttygen key.ppk -O private-openssh -o deploy_key`, then set {name} to the "
        "content of deploy_key.",
    ),
    "key::encrypted": Problem(
        title="{source} is protected by a passphrase",
        why="A build cannot type a passphrase: ssh would stop and wait for one, or fail.",
        fix="Deploy keys for builds have no passphrase. Remove it from a copy with "
        "`ssh-keygen -p -N '' -f deploy_key` (or create a new key with -N ''), then set {name} again.",
    ),
    "key::undecodable": Problem(
        title="{source} is neither a private key nor base64 of one",
        why="{detail}",
        fix="Set {name} to the private key file's content (`$(cat deploy_key)`) or to its base64 "
        "(`$(base64 -w0 deploy_key)`).",
    ),
    "key::truncated": Problem(
        title="{source} holds an incomplete private key",
        why="{detail} The value was probably cut when it was copied or pasted.",
        fix="Set {name} again from the whole key file: {set_key}.",
    ),
    "key::multiple": Problem(
        title="{source} holds {count} private keys",
        why="One {setting} carries one key; deploykey cannot guess which one to use.",
        fix="Keep one key in {name}. For a second repository use another variable "
        "(DEPLOY_KEY_<NAME>).",
    ),
    "key::dsa": Problem(
        title="{source} holds a DSA key",
        why="DSA keys are disabled in current OpenSSH and refused by GitHub, GitLab and Bitbucket.",
        fix="Create an Ed25519 key: `ssh-keygen -t ed25519 -N '' -f deploy_key`.",
    ),
    "key::invalid": Problem(
        title="ssh-keygen cannot read the key in {source}",
        why="The value looks like a {format} private key but ssh-keygen said: {detail}",
        fix="Check the key locally with `ssh-keygen -y -f deploy_key`; if that works, set {name} "
        "from the file (`$(cat deploy_key)`) rather than by pasting.",
    ),
    "key::refused": Problem(
        title="{host} refused the deploy key {fingerprint}",
        why="The server answered: {detail}",
        fix="Add the public half of this key (fingerprint {fingerprint}) as a deploy key of the "
        "repository on {host}, or give the build the key that is registered there.",
    ),
    "key::wrong-repo": Problem(
        title="The deploy key {fingerprint} cannot read {repo} on {host}",
        why="The server answered `Repository not found`: GitHub deploy keys open exactly one "
        "repository, and this key is registered for another one (or none).",
        fix="Add this key's public half as a deploy key of {repo}, or use the key registered there.",
    ),
    "keys::unset": Problem(
        title="deploykey.yml maps {name}, but no {setting} {name} is set",
        why="`keys:` in deploykey.yml routes repositories to keys by variable name; the keys set "
        "are: {known}.",
        fix="Set it ({set_key}) or correct the name in deploykey.yml.",
    ),
    "doctor::failed": Problem(
        title="{count} of {total} private requirements cannot be fetched",
        why="{failures}",
        fix="Fix each one as said above; `deploykey doctor APP_DIR ENV_DIR` checks again without "
        "installing anything.",
    ),
    "config::invalid": Problem(
        title="{path} is not valid: {detail}",
        why="deploykey.yml holds per-host settings (hostname, port, user, known_hosts).",
        fix="Correct the file; see the README section `deploykey.yml`.",
    ),
    "config::key-inside": Problem(
        title="{path} holds a private key (under keys: {name})",
        why="deploykey.yml is committed with the app: a key written there is in the repository's "
        "history for everyone who can read it. Under `keys:` each config var lists the "
        "repositories or hosts its key opens; the key itself is set as a {setting}.",
        fix="Remove the key from the file and list there the repositories it opens (e.g. "
        "`{name}: [acme/private-utils]`). " + ROTATE,
    ),
    "config::amount": Problem(
        title="{name}={value} is not a valid setting",
        why="{name} takes {form}.",
        fix="Set {name} to such a value, or unset it for the default ({default}).",
    ),
    "config::setting": Problem(
        title="{name}={value} is not a valid setting",
        why="{name} takes one of: {choices}.",
        fix="Set {name} to one of those values, or unset it for the default ({default}).",
    ),
    "host::unknown": Problem(
        title="No trusted host key for {host}",
        why="{where} fetches from {host} over ssh, and deploykey only trusts the pinned keys of "
        "github.com, gitlab.com and bitbucket.org. It never trusts a host key on first use. (A "
        "host a GitHub App serves, `host:` under `github_app:`, is fetched over HTTPS and needs "
        "none.)",
        fix="Add the host's key to deploykey.yml (get it from your git host's documentation or "
        "`ssh-keyscan -t ed25519 {host}` run on a trusted network and checked against it):\n"
        'hosts:\n  {host}:\n    known_hosts: ["{host} ssh-ed25519 AAAA..."]',
    ),
    "host::known-hosts": Problem(
        title="deploykey.yml: the known_hosts entry {index} of {host} is not a host key",
        why="{detail}",
        fix='Write each entry as `HOST KEYTYPE BASE64`, e.g. "{host} ssh-ed25519 AAAAC3Nza...".',
    ),
    "host::mismatch": Problem(
        title="Host key verification failed for {host}",
        why="The server at {address} showed a host key{offered} that is not one of the trusted "
        "keys for {host}: {expected}. Either the host rotated its key (GitHub did on 2023-03-24, "
        "Bitbucket in June 2023) or something is intercepting the connection.",
        fix="Check the host's published fingerprints. If the host really rotated its key, update "
        "deploykey; to trust another key for this host, list it under `hosts: {host}: "
        "known_hosts:` in deploykey.yml. Never turn host key checking off.",
    ),
    "host::unreachable": Problem(
        title="Cannot connect to {host} ({address})",
        why="ssh said: {detail}",
        fix="Check the host name and port in deploykey.yml. If port 22 is blocked on your network, "
        "GitHub also serves ssh on ssh.github.com port 443 (set hostname: ssh.github.com, "
        "port: 443).",
    ),
    "requirements::missing": Problem(
        title="No {file} in the app",
        why="deploykey installs the app's requirements file (DEPLOYKEY_REQUIREMENTS, default "
        "requirements.txt). The app dir holds: {listing}.",
        fix="Add {file}, set DEPLOYKEY_REQUIREMENTS to the file to install, or set "
        "DEPLOYKEY_INSTALL=off to only hand ssh to the next buildpack.",
    ),
    "requirements::not-a-file": Problem(
        title="{file} in the app is not a file: it is {kind}",
        why="deploykey installs the app's requirements file (DEPLOYKEY_REQUIREMENTS, default "
        "requirements.txt), which pip and uv read as a file of requirement lines.",
        fix="Make {file} a file listing the app's requirements, or set DEPLOYKEY_REQUIREMENTS to "
        "the file to install{example}.",
    ),
    "requirements::ssh-user": Problem(
        title="{file}:{line}: `{user}` is not a valid ssh user name",
        why="In `{url}` the part before `@` is the user ssh logs in as: letters, digits, `.`, `_` "
        "and `-`, never first. One that starts with `-` reaches ssh's command line as an option "
        "(`-oProxyCommand=...` runs a command), so deploykey refuses it before any ssh runs.",
        fix="Write the user the git host expects (GitHub, GitLab and Bitbucket: `git`): "
        "`{fixed}`. If you did not write this line, find out who did.",
    ),
    "requirements::scp-url": Problem(
        title="{file}:{line}: `{url}` uses a colon after the host",
        why="pip only takes `git+ssh://` URLs with a slash between host and path; with a colon it "
        "reads `{port}` as a port number and the install fails.",
        fix="Write it as `{fixed}`.",
    ),
    "requirements::unsafe": Problem(
        title="{file}:{line}: the {part} `{value}` in `{url}` is not one deploykey fetches",
        why="A repository path is the host's `owner/name` (each part letters, digits, `.`, `_`, "
        "`~` and `-`, never `.` or `..`, never starting with `-`), and a ref is a tag, branch or "
        "commit that does not start with `-` nor holds `..`. Anything else could make the mirror "
        "leave the build cache (`..`) or reach git's command line as an option "
        "(`--upload-pack=...` runs a command), so deploykey refuses it before any git runs.",
        fix="Write the repository and ref as the git host shows them "
        "(`git+ssh://git@github.com/acme/private-utils.git@v1.0`). If you did not write this "
        "line, find out who did.",
    ),
    "requirements::not-a-commit": Problem(
        title="{where}: `{ref}` of {repo} names a {kind}, not a commit",
        why="An installer checks out a commit; at {repo}, `{ref}` is the {kind} {sha}, so the "
        "install would fail later, inside the installer.",
        fix="Name a tag or branch that points at a commit, or the full 40-character commit, in "
        "{where}.",
    ),
    "gitconfig::rewrite": Problem(
        title="{origin} sends {url} somewhere other than deploykey's mirror",
        why="That git config (system, global or an include of theirs) has "
        "`url.{target}.insteadOf = {value}`, which deploykey did not write. The installer's git "
        "obeys it before deploykey's own rule, so it would fetch {url} from there, not from the "
        "mirror that was just fetched and checked. HOME and /etc persist between builds on CI "
        "runners, laptops and Docker layers, and an earlier build's package code can write them: "
        "deploykey's own git never reads them, and the install does not start.",
        fix="Remove the rule from {origin} (`git config --file FILE --remove-section url.TARGET`, "
        "or edit the file), and find out what wrote it: if no one you know did, a dependency's "
        "build code did, so rotate the keys and tokens that build had.",
    ),
    "manifests::invalid": Problem(
        title="Cannot read {file}: {detail}",
        why="deploykey reads {file} to find the private git dependencies the build fetches over "
        "ssh, and its {format} parser stopped there.",
        fix="Correct {file} where the message says (the installer would refuse it too); "
        "regenerate a lockfile with its own tool (`uv lock`, `poetry lock`, `pipenv lock`) "
        "rather than editing it. If the message is about Python, run the build with Python 3.11 "
        "or newer, or make the tomli package importable.",
    ),
    "manifests::ambiguous": Problem(
        title="Multiple Python package manager files were found: {files}",
        why="Exactly one of requirements.txt, Pipfile.lock, poetry.lock and uv.lock decides how "
        "the app is installed; with several, the others are silently ignored. "
        "heroku-buildpack-python refuses such an app too (since v325).",
        fix="Decide which package manager the app uses, then delete the other files and their "
        "config. A third-party uv or Poetry buildpack writes a requirements.txt: remove that "
        "buildpack, heroku/python reads uv.lock and poetry.lock itself.",
    ),
    "install::failed": Problem(
        title="{installer} failed with exit status {status}",
        why="The command `{command}` failed; its output is above. It ran from the local mirrors "
        "of the private repositories, after the keys had been removed.",
        fix="Read the first error in the output above. Run `deploykey doctor` (or `bin/compile "
        "... --dry-run`) to check the keys, the hosts and every private repository without "
        "installing.",
    ),
    "install::not-fetched": Problem(
        title="{installer} needed a private repository that was not fetched: {repos}",
        why="deploykey fetches every private repository before the install and removes the keys "
        "before any package's build code runs. It finds them in the app's requirements, manifests "
        "and lockfiles, and in the pyproject.toml, setup.cfg, requirements.txt and .gitmodules of "
        "each repository it fetches; this one is named somewhere it cannot read without running "
        "code (a setup.py, say).",
        fix="Name it where deploykey reads: lock it (uv.lock, poetry.lock, Pipfile.lock), or add "
        "it to requirements.txt (or the app's pyproject.toml), with the same URL and ref.",
    ),
    "install::lock-outdated": Problem(
        title="{file} is out of date: {tool} refused to install from it",
        why="{tool} installs exactly what {file} locks, and {file} no longer matches the app's "
        "{manifest} (a dependency, a version range or requires-python changed since it was "
        "made); `{command}` said so above. deploykey does not lock: locking resolves against "
        "the package index and the private repositories, which is the developer's step.",
        fix="Update the lockfile where the private repositories are reachable and commit it:\n"
        'eval "$(bin/deploykey setup --shell)"; {lock}; eval "$(bin/deploykey cleanup --shell)"\n'
        "(or `{lock}` with your own ssh access), then build again.",
    ),
    "install::lock-missing": Problem(
        title="The app has a {file} but no {lockfile}",
        why="{tool} installs from {lockfile}, as heroku-buildpack-python does: without it the "
        "build would have to resolve (and lock) the dependencies itself.",
        fix='Make it where the private repositories are reachable and commit it: eval "$(bin/'
        'deploykey setup --shell)"; pipenv lock; eval "$(bin/deploykey cleanup --shell)"',
    ),
    "install::needs-venv": Problem(
        title="{file} is installed with {tool} into a virtual environment, not {where}",
        why="{tool} installs a lockfile into a whole environment of its own, which `deploykey "
        "install` builds with --venv; --target, --user and the running Python's site-packages "
        "take a requirements file only.",
        fix="Use `deploykey install --venv PATH`, or install a requirements file with `-r FILE` "
        "(exported from the lockfile: `uv export --format requirements-txt`, `poetry export`, "
        "`pipenv requirements`).",
    ),
    "install::kept-lost": Problem(
        title="The environment kept for this lockfile could not be restored into {path}",
        why="The build cache kept the environment {installer} made from exactly these inputs, so "
        "this build fetched nothing; then copying it back failed (a full disk, or the cache "
        "changed meanwhile: the reason is above). What was kept for it is dropped.",
        fix="Run the build again: it fetches and runs {installer} (free some disk space first "
        "if the disk is full).",
    ),
    "install::not-a-venv": Problem(
        title="{path} exists and is not a virtual environment",
        why="{found} deploykey makes the virtual environment itself, in a path that "
        "does not exist yet or in an empty directory, and never writes over other files.",
        fix="Give --venv a new path or an empty directory (in a Dockerfile, made for a non-root "
        "USER as root: `RUN mkdir {path} && chown app {path}`), or empty {path} first.",
    ),
    "install::unwritable": Problem(
        title="Cannot write the {what} {path} as {user} (uid {uid})",
        why="{blocker} is owned by {owner} with mode {mode}, and deploykey runs as {user} (in a "
        "Docker build: the Dockerfile's USER), so it cannot make or fill {path}.",
        fix="Make the directory for that user in an earlier step, as root (before `USER`): "
        "`RUN mkdir -p {path} && chown {uid} {path}`; deploykey installs into an empty "
        "directory. Or give a path {user} can write.",
    ),
    "install::app-path": Problem(
        title="Cannot create the virtual environment at the run-time path {app_path}",
        why="A virtual environment has its own path baked into its scripts, so deploykey builds it "
        "at the path the app runs from ({app_path}) and moves it into the build dir. {reason}",
        fix="Set DEPLOYKEY_APP_PATH to the directory the app runs from (for a local run: the build "
        "dir itself), or use the Python buildpack and DEPLOYKEY_INSTALL=off.",
    ),
    "install::app-path-busy": Problem(
        title="{app_path} is in use by another build on this machine (pid {pid}, build dir "
        "{other})",
        why="While it installs, a build links the run-time path {app_path} to its build dir, so "
        "that the virtual environment it makes works at the path the app runs from; the build "
        "of pid {pid} holds that link now, and two builds cannot both build at {app_path}.",
        fix="Wait for that build to end, then run this one again; or run builds on this machine "
        "one at a time (a CI concurrency limit of 1). For a local run, set DEPLOYKEY_APP_PATH to "
        "the build dir itself.",
    ),
    "tool::missing": Problem(
        title="`{tool}` is not installed",
        why="deploykey needs {tool} to {purpose}.",
        fix="{fix}",
    ),
    "tool::writable": Problem(
        title="`{tool}` is only in {where}, which {user} (uid {uid}) can write",
        why="deploykey needs {tool} to {purpose}, with the keys at hand; a program in a directory "
        "the build user can write (or rename) may have been put there by an earlier build's code.",
        fix="Install {tool} where only root writes (Debian/Ubuntu: apt-get install; it goes to "
        "/usr/bin), or make {where} and the directories above it unwritable for uid {uid}.",
    ),
    "tool::bootstrap": Problem(
        title="Could not install {requirement} into the build cache ({target})",
        why="The app's lockfile is installed with {tool}, which is not on PATH and not in the build "
        "cache yet, so deploykey installs it from PyPI with pip, once. {detail}",
        fix="Let the build reach PyPI (or your index: PIP_INDEX_URL, PIP_CERT for a proxy's CA), "
        "or put {tool} on PATH; then build again.",
    ),
    "path::symlink": Problem(
        title="{path} is a symbolic link; deploykey will not write through it",
        why="A link at a path the build writes could send the kit's files somewhere else.",
        fix="Replace the link with a regular file or remove it.",
    ),
    "home::unwritable": Problem(
        title="Cannot write {path}",
        why="The app hooks hand ssh to pip through $HOME/.gitconfig, the one file git reads in the "
        "Python buildpack's pip process; {reason}",
        fix="Give the build a writable HOME (Heroku builds have one), or use deploykey as a "
        "buildpack before heroku/python instead of app hooks.",
    ),
    "path::unsafe": Problem(
        title="{path} cannot hold the key",
        why="{reason}",
        fix="Set TMPDIR to a private directory outside the app and the cache.",
    ),
    "path::no-room": Problem(
        title="No temporary directory can hold the key",
        why="{tried}. deploykey keeps the key for the fetch in a fresh private directory in memory "
        "(/dev/shm), else under TMPDIR, never in the app or the cache.",
        fix="Free some space in /dev/shm (Docker: `docker run --shm-size`), or set TMPDIR to a "
        "writable directory with free space, outside the app and the cache.",
    ),
    "hooks::exists": Problem(
        title="{path} exists and is not deploykey's {hook} hook",
        why="deploykey does not overwrite an app's own hooks.",
        fix="Rename your hook (e.g. bin/{hook}.app), run `deploykey hooks` again, and call the "
        "renamed hook from the top of the new bin/{hook}.",
    ),
    "fetch::missing": Problem(
        title="`install --fetched` found no record of a fetch in {path}",
        why="`install --fetched` installs from the mirrors `deploykey fetch` left in the cache "
        "mount, with no key; that step has not run with this cache.",
        fix="Run `deploykey fetch --cache-dir DIR` in a `RUN` before this one, with the secret "
        "mounted there and the same cache mount (`--mount=type=cache,target=DIR`) on both.",
    ),
    "fetch::stale": Problem(
        title="What `deploykey fetch` recorded in {path} does not fit this install",
        why="{detail}.",
        fix="Run `deploykey fetch` with the same `-r` and the same cache mount in the `RUN` just "
        "before `install --fetched`, in the same build.",
    ),
    "fetch::key-present": Problem(
        title="`install --fetched` was given keys ({names})",
        why="The point of `install --fetched` is an install with no key on the machine: the "
        "packages it builds run code, and a secret mounted in this `RUN` is readable by it.",
        fix="Mount the secret only in the `RUN` of `deploykey fetch`, not in this one.",
    ),
    "fetch::deadline": Problem(
        title="The fetch did not end within {seconds} s (DEPLOYKEY_FETCH_TIMEOUT): still fetching "
        "{running}",
        why="deploykey fetches every private repository with the keys on the machine, so the "
        "fetch has a deadline: a host that keeps a connection talking (an endless ref "
        "advertisement, a transfer that never ends) is not cut by ssh's or git's silence "
        "timeouts. git and ssh were stopped and the keys removed.",
        fix="If {hosts} is only slow, or the repositories large, raise DEPLOYKEY_FETCH_TIMEOUT "
        "(seconds; a {setting}). Otherwise check {hosts}: a git host answers a fetch in seconds.",
    ),
    "fetch::too-much": Problem(
        title="{host} sent more than {limit} (DEPLOYKEY_FETCH_MAX_SIZE) while deploykey fetched "
        "{what}",
        why="deploykey had received {size} from {host} when it stopped git and ssh, and removed "
        "the keys. What one host may send during the fetch is bounded, so that a broken or "
        "hostile host cannot fill the build's memory and disk.",
        fix="If the repositories on {host} really are that large, raise DEPLOYKEY_FETCH_MAX_SIZE "
        "(bytes, or with K, M, G; a {setting}), e.g. to 8G. Otherwise check {host}.",
    ),
    "scan::incomplete": Problem(
        title="The leak check could not unpack {count} archive(s) in full, so it cannot say "
        "they hold no key",
        why="{paths}\nA copy of the key inside a member it could not reach would not be found "
        "in the archive's packed bytes.",
        fix="Find what wrote these archives. If a package ships them broken on purpose (test "
        "data), set DEPLOYKEY_SCAN_INCOMPLETE=warn: they are then named and searched as bytes "
        "only.",
    ),
    "app::incomplete": Problem(
        title="{given} is set, but not {missing}",
        why="A GitHub App needs both: the App's id (GITHUB_APP_ID, or `app_id` under `github_app:` "
        "in deploykey.yml) and its private key (GITHUB_APP_PRIVATE_KEY, the .pem file the App's "
        "settings page downloads, or base64 of it), to sign the JWT that mints installation "
        "tokens.",
        fix="Set {missing} as a {setting}; the App id is on the App's settings page (General, "
        "About).",
    ),
    "app::key-not-rsa": Problem(
        title="{source} is not a GitHub App private key: it is a {keytype} key ({fingerprint})",
        why="GitHub Apps sign their JWTs with RS256: their private keys are RSA, in the .pem file "
        "the App's settings page generates. A deploy key or an ssh key is not one.",
        fix="Generate a private key on the App's settings page (General, Private keys) and set "
        "the downloaded .pem file's content as GITHUB_APP_PRIVATE_KEY.",
    ),
    "app::not-installed": Problem(
        title="The GitHub App {app} is not installed on {owner}",
        why="{owner}/{repo} is on {host}, and an App reads only the accounts it is installed on. "
        "GitHub answered 404 for the installation on {owner}/{repo}, on the organisation and "
        "on the user {owner}.",
        fix="Install the App on {owner} and give it {repos}: {install_url}",
    ),
    "app::repository-not-selected": Problem(
        title="The App's installation on {owner} cannot read {repos}",
        why="The App is installed on {owner} (installation {installation}), but only for selected "
        "repositories, and {repos} is not among them (or does not exist): GitHub answered 404 "
        "for the installation of each, asked one by one.",
        fix="Add {repos} under Repository access in the installation's settings: {settings_url}",
    ),
    "app::no-contents": Problem(
        title="The GitHub App's installation on {owner} cannot read repository contents",
        why="Fetching a repository needs the Contents permission (read); the installation "
        "{installation} has {permissions}.",
        fix="In the App's settings (Permissions and events, Repository permissions) set Contents "
        "to Read-only; then {owner} accepts the new permission at {settings_url}.",
    ),
    "app::clock": Problem(
        title="GitHub refused the App's JWT for its times: {message}",
        why="A JWT is valid from `iat` (deploykey sets it 60 s in the past) to `exp` (9 minutes "
        "ahead), as GitHub's clock sees them. {offset}",
        fix="Set this machine's clock right (NTP: `timedatectl set-ntp true`, or the container "
        "host's clock), then build again.",
    ),
    "app::rejected": Problem(
        title="GitHub refused the App's JWT: {message}",
        why="The JWT names App {app_id} and is signed with GITHUB_APP_PRIVATE_KEY ({fingerprint}, "
        "as GitHub shows it). GitHub did not accept the pair: the id is not the App's, or the key "
        "is not one of its private keys (another App's, or deleted).",
        fix="On the App's settings page (General) compare the App ID with {app_id} and the "
        "private keys' fingerprints with {fingerprint}; generate a new key there if none "
        "matches, and set it as GITHUB_APP_PRIVATE_KEY.",
    ),
    "app::unreachable": Problem(
        title="GitHub's API at {url} cannot be reached: {reason}",
        why="Minting an installation token is an HTTPS request to the API (deploykey trusts the "
        "system's CA store, as pip and git do; it honours HTTPS_PROXY and NO_PROXY).",
        fix="Check that this build can reach {url}: a proxy needs HTTPS_PROXY, a TLS-inspecting "
        "proxy's (or GitHub Enterprise Server's) CA must be in the system store "
        "(update-ca-certificates in the build image) or in a bundle SSL_CERT_FILE names (with "
        "CNB, in the platform env), GitHub Enterprise Server needs `api_url` under `github_app:` "
        "in deploykey.yml.",
    ),
    "app::rate-limited": Problem(
        title="GitHub's API rate limit stopped the App ({message})",
        why="GitHub answered {status}: the App has used its requests for now. {reset}",
        fix="Build again after that time; an App makes 3 to 5 requests per build.",
    ),
    "app::api": Problem(
        title="GitHub's API answered {status} to {request}: {message}",
        why="deploykey asked for what an installation token needs (the installation of a "
        "repository, a token for it) and GitHub refused.",
        fix="Check the App's installation on the account; {documentation}",
    ),
    "tls::untrusted": Problem(
        title="The certificate of {host} is not trusted: {reason}",
        why="{client} checked it against {trusted}, and none of those CAs signed it. deploykey "
        "trusts the system's CA store plus what SSL_CERT_FILE (a PEM bundle) and SSL_CERT_DIR (a "
        "directory of PEM files) name, and hands that one setting to its own requests, to git "
        "and to the installers.",
        fix="If {host} has a certificate from a private CA (GitHub Enterprise Server, a "
        "TLS-inspecting proxy), set SSL_CERT_FILE to a PEM file holding that CA's certificate "
        "(in the build's environment; with CNB in the platform env, `pack build --env "
        "SSL_CERT_FILE=...`), or add the CA to the build image's system store "
        "(update-ca-certificates). Verification is never turned off.",
    ),
    "tls::setting": Problem(
        title="{name} names {path}, which deploykey cannot use: {reason}",
        why="{name} adds CA certificates to the system store for every HTTPS request of the "
        "build (deploykey's, git's, the installers').",
        fix="Point {name} at a readable PEM file (SSL_CERT_FILE) or a directory of PEM files "
        "(SSL_CERT_DIR), or unset it.",
    ),
    "scan::missing": Problem(
        title="{path} does not exist (or is a symbolic link to nothing)",
        why="`deploykey scan` searches the paths it is given; it does not report a path it could "
        "not find as holding no key.",
        fix="Give the directory or file to scan (the app, the image's root, the cache).",
    ),
    "scan::unreadable": Problem(
        title="The leak check could not read {count} path(s), so it cannot say they hold no key",
        why="{paths}\nIt runs as {user} (uid {uid}); a file it cannot read could hold a copy of "
        "the key, so it does not report the build clean.",
        fix="Make these paths readable by {user} (`chmod -R a+rX PATH`, or `chown`), or run the "
        "scan as a user who can read them. In a Docker build with a non-root USER, give the cache "
        "mount an `id` of its own and that user (`--mount=type=cache,id=deploykey-{uid},"
        "target=...,uid={uid}`): a cache a root build filled stays root's.",
    ),
    "leak::found": Problem(
        title="Key material found in {count} file(s) of the build",
        why="{files}",
        fix="Remove these files from the app or the cache, and find what wrote them. " + ROTATE,
    ),
    "leak::context": Problem(
        title="Key material found in the build context {app}",
        why="{files}\n"
        "These came in with the build context: the `COPY` that brought them made a layer, and the "
        "builder keeps that layer in its cache although this build failed; a later build with "
        "the same steps reuses it, key and all.",
        fix="Delete the file from the context and list it in .dockerignore, then drop the cached "
        "layer with `docker builder prune --all` (buildx: `docker buildx prune --all`). " + ROTATE,
    ),
    "leak::image": Problem(
        title="Key material found in {count} place(s) of the image {path}",
        why="{places}",
        fix="An image keeps every layer and its history: a file deleted in a later layer, an ARG or "
        "ENV value, are still there. Pass keys with `RUN --mount=type=secret` (or "
        "`--mount=type=ssh`) and copy only the built artifacts into the final stage. " + ROTATE,
    ),
    "image::unreadable": Problem(
        title="Cannot read the image archive {path}",
        why="{detail}",
        fix="Give an OCI archive (`buildah push IMAGE oci-archive:image.tar`, `skopeo copy "
        "docker-daemon:IMAGE oci-archive:image.tar`) or a `docker save IMAGE -o image.tar` tarball "
        "with gzip or uncompressed layers.",
    ),
    "agent::missing": Problem(
        title="--agent was given, but SSH_AUTH_SOCK is not set",
        why="With --agent, ssh uses the keys of the agent the build mounts; there is none here.",
        fix="Use `RUN --mount=type=ssh deploykey install --agent ...` and build with "
        "`docker build --ssh default .` (buildah: `--ssh default`) from a shell whose agent "
        "holds the deploy key (`ssh-add deploy_key`; `ssh-add -l` lists it).",
    ),
    "agent::unusable": Problem(
        title="The ssh agent at SSH_AUTH_SOCK={socket} cannot be used: {problem}",
        why="With --agent, ssh authenticates with the keys of the agent the build mounts "
        "(`RUN --mount=type=ssh` sets SSH_AUTH_SOCK). This is not about the deploy key: "
        "`docker build` was run without `--ssh default`, or its agent holds no key.",
        fix="Start an agent that holds the deploy key, check it, and pass it to the build:\n"
        'eval "$(ssh-agent -s)" && ssh-add deploy_key\n'
        "ssh-add -l    # must list the key\n"
        "docker build --ssh default -f Dockerfile.ssh .    (buildah: --ssh default)\n"
        "Under a non-root USER ({user}, uid {uid}), mount the socket for it: "
        "`RUN --mount=type=ssh,uid={uid} ...`.",
    ),
    "agent::own": Problem(
        title="deploykey could not hand the deploy keys to an ssh agent of its own: {problem}",
        why="deploykey keeps the deploy keys in memory only while it fetches: in an ssh-agent it "
        "starts, fed over a pipe (`ssh-add -`), so that no key is ever a file another process "
        "could copy. That needs ssh-agent and ssh-add (OpenSSH), next to ssh.",
        fix="Install the OpenSSH client (Debian/Ubuntu: apt-get install openssh-client), which "
        "has ssh-agent and ssh-add; then build again.",
    ),
    "keydir::tampered": Problem(
        title="Something changed deploykey's key dir while the fetch ran: {files}",
        why="deploykey wrote {path} (0700) for this fetch alone, and another process of this "
        "user changed it: one left running by the build code of an earlier build, most likely "
        "(a daemon that survived its build). ssh and git may have obeyed what it wrote, so "
        "nothing this fetch did is trusted: the mirrors it fetched or updated were discarded "
        "({mirrors}) and nothing was installed. The key itself was never in a file there.",
        fix="Find and stop the processes of this user that outlived their build (`ps -u "
        "$(id -un) -o pid,lstart,args`), or build in a fresh container or user; rotate the deploy "
        "key if such a process ran while a build fetched; then build again.",
    ),
    "build::interrupted": Problem(
        title="The build was interrupted by {signal}",
        why="deploykey removed the key and its ssh config before exiting.",
        fix="Run the build again.",
    ),
    "python::too-old": Problem(
        title="deploykey needs Python 3.10 or newer; {python} is {version}",
        why="The kit runs with the build image's python3.",
        fix="Use a stack whose python3 is 3.10 or newer (heroku-22, heroku-24).",
    ),
    "deps::unreachable": Problem(
        title="Could not reach the package index for deploykey's own dependencies ({packages})",
        why="pip ran but never reached the index: {cause}",
        fix="Check the network and proxy settings of the build (HTTPS_PROXY; PIP_INDEX_URL for "
        "a mirror; SSL_CERT_FILE or PIP_CERT when a proxy's certificate authority is not in the "
        "system store), or put the wheels deploykey pins in a directory and point "
        "DEPLOYKEY_DEPS_DIR at it (`pip download --require-hashes --no-deps --only-binary=:all: "
        "-r deps.lock -d DIR`, with the kit's lib/deploykey/deps.lock).",
    ),
    "deps::bootstrap": Problem(
        title="Could not install deploykey's own dependencies ({packages})",
        why="{detail}",
        fix="Make pip available to {python} (Debian/Ubuntu: python3-pip), or put the wheels "
        "deploykey pins in a directory and point DEPLOYKEY_DEPS_DIR at it (`pip download "
        "--require-hashes --no-deps --only-binary=:all: -r deps.lock -d DIR`, with the kit's "
        "lib/deploykey/deps.lock).",
    ),
    "deps::tampered": Problem(
        title="{file} is not a file deploykey pinned for its own dependencies",
        why="deploykey imports sh, python-dotenv, pyyaml and ahocorasick-rs only from the wheels "
        "whose sha256 its deps.lock lists (every wheel PyPI has for the versions it pins): "
        "{found}. Nothing from the file was imported.",
        fix="If the file is in DEPLOYKEY_DEPS_DIR, delete it and run again: deploykey downloads "
        "the pinned wheels there and checks them. If pip downloaded it, the index or a proxy on the "
        "way (PIP_INDEX_URL, PIP_FIND_LINKS, HTTPS_PROXY) serves other bytes than PyPI published: "
        "use PyPI or a faithful mirror. Either way, find out what changed the file: build code can "
        "write where the build's user can.",
    ),
}


class UserError(Exception):
    """A failure the user can fix; its wording lives in PROBLEMS under its slug."""

    def __init__(self, slug: str, **facts: object) -> None:
        if slug not in PROBLEMS:
            raise KeyError(slug)
        self.slug = slug
        self.facts = facts
        super().__init__(self.title)

    @property
    def problem(self) -> Problem:
        return PROBLEMS[self.slug]

    def _facts(self) -> dict[str, object]:
        """The error's facts, and how to set its key (or DEPLOY_KEY) on the current platform."""
        name = self.facts.get("name")
        named = isinstance(name, str) and name.startswith(("DEPLOY_KEY", "GITHUB_APP"))
        key = name if named and isinstance(name, str) else "DEPLOY_KEY"
        return {**_platform.facts(key), **self.facts}

    @property
    def title(self) -> str:
        return self.problem.title.format(**self._facts())

    @property
    def why(self) -> str:
        return self.problem.why.format(**self._facts())

    @property
    def fix(self) -> str:
        return self.problem.fix.format(**self._facts())

    @property
    def exit_code(self) -> int:
        return self.problem.exit_code

    @property
    def anchor(self) -> str:
        """The README section that explains this error."""
        return "README.md#" + self.slug.replace("::", "-")


class Interrupted(BaseException):
    """Raised by the signal handlers so that every `finally` (the scrub) runs on SIGTERM/SIGINT."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name
