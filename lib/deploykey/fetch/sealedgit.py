"""deploykey's own git, sealed: the one way it runs git while a key, a token or an App is reachable.

Build code can write HOME, /etc and the temp dirs, and the next build's fetch is the step that holds
the key: so that git reads no configuration and runs no program deploykey did not choose.
- No system, global or XDG config (and so no include from them): GIT_CONFIG_NOSYSTEM, and
  GIT_CONFIG_GLOBAL=/dev/null, which replaces ~/.gitconfig, $XDG_CONFIG_HOME/git/config and
  ~/.config/git/config alike (git-config(1), ENVIRONMENT; git >= 2.32). GIT_CONFIG_SYSTEM too.
- No template dir: `git clone` copies its `config` (and hooks) into the new mirror before fetching
  (git-init(1), TEMPLATE DIRECTORY); an empty GIT_TEMPLATE_DIR copies nothing (builtin/init-db.c,
  copy_templates). The system one, /usr/share/git-core/templates, is writable by a root build.
- No hook, no fsmonitor: `-c core.hooksPath=/dev/null -c core.fsmonitor=false`.
- Only the protocols the fetch needs: GIT_ALLOW_PROTOCOL overrides every `protocol.*.allow`
  setting (git(1)), so `ext::` (runs a command) and `file::` (reads this machine) never run, nor
  does a lazy fetch from a reading of a mirror (no protocol at all there).
- Nothing else from the environment that points git at other directories or programs
  (GIT_DIR, GIT_EXEC_PATH, GIT_CONFIG_PARAMETERS, GIT_SSH*, GIT_ASKPASS, GIT_TRACE*, ...): the
  child gets childenv's allow-list, which has no GIT_* name, plus what the caller sets; and its
  PATH (the router's sh and tr, git's helpers) only the directories build code cannot write.
The installers' git is not sealed: it needs the mirror settings, and runs package build code anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deploykey.core.childenv import secret_env

OPTIONS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
SEALED = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_SYSTEM": "/dev/null",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TEMPLATE_DIR": "",
    # git >= 2.45: a reading of a mirror never fetches a missing object (GIT_ALLOW_PROTOCOL="" is
    # what stops it on older git).
    "GIT_NO_LAZY_FETCH": "1",
}


def argv(git: str, *args: str) -> list[str]:
    """git's command line with the options that turn off hooks and fsmonitor."""
    return [git, *OPTIONS, *args]


def env(extra: Mapping[str, str] | None = None, protocols: Sequence[str] = ()) -> dict[str, str]:
    """The environment of a sealed git: the allow-list, `extra` (the fetch's ssh command and its
    GIT_CONFIG_* settings), only `protocols` allowed (none: a reading of a mirror on disk)."""
    sealed = secret_env(extra)
    sealed.update(SEALED)
    sealed["GIT_ALLOW_PROTOCOL"] = ":".join(protocols)
    return sealed


def protocols(ssh: bool, https: bool, http: bool) -> tuple[str, ...]:
    """The allow-list of a fetch: ssh for the keys, https where a token or a GitHub App is used,
    http only for such a host written with http:// (the credential helper answers http for
    loopback hosts only). Never ext, file, git."""
    return tuple(
        name for name, wanted in (("ssh", ssh), ("https", https), ("http", http)) if wanted
    )
