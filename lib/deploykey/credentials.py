"""Tokens for HTTPS-only setups, handed to git by a credential helper that reads them from files.

A token never goes into a URL: pip would keep it in `direct_url.json`, git in the `.git/config` of
an editable checkout, and older pip printed it in its "Collecting" line. Instead the token sits in
a 0600 file in the build's key dir, and git asks for it through `credential.helper` (the helper is
a shell script reading that file; no token is ever an argument or an environment variable of git,
pip or a package's build code). Plain http is answered only for loopback hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deploykey import output
from deploykey.config import Settings
from deploykey.sources import EnvSource

HELPER = "git-credential-deploykey"
INDEX = "tokens"

HELPER_SCRIPT = r"""#!/bin/sh
# deploykey's git credential helper for one build: answers `get` for the hosts listed in `tokens`
# (HOST USER FILE [PATH]) with the token in FILE; a line with a PATH (a GitHub App's token, which
# opens only its installation's repositories) answers for that repository only, the first line
# that fits wins. Written by deploykey; removed when the build ends.
set -eu
dir=$(dirname -- "$0")
[ "${1-}" = get ] || exit 0
protocol=""
host=""
path=""
while IFS= read -r line; do
  [ -n "$line" ] || break
  case "$line" in
    protocol=*) protocol=${line#protocol=} ;;
    host=*) host=${line#host=} ;;
    path=*) path=${line#path=} ;;
  esac
done
path=${path%.git}
case "$protocol" in
  https) ;;
  http) case "$host" in 127.0.0.1 | 127.0.0.1:* | localhost | localhost:* | "[::1]"*) ;; *) exit 0 ;; esac ;;
  *) exit 0 ;;
esac
while read -r token_host user file token_path; do
  if [ "$token_host" = "$host" ] && { [ -z "$token_path" ] || [ "$token_path" = "$path" ]; }; then
    printf 'username=%s\npassword=' "$user"
    cat "$dir/$file"
    printf '\n'
    exit 0
  fi
done <"$dir/tokens"
"""


@dataclass(frozen=True)
class Token:
    name: str
    host: str
    username: str
    value: bytes = field(repr=False)

    @property
    def file_name(self) -> str:
        return "token_" + self.name.lower()

    def describe(self) -> str:
        return f"{self.name} for {self.host} (user {self.username})"


def read(env: EnvSource, settings: Settings) -> list[Token]:
    tokens = []
    for config in settings.token_configs().values():
        text = env.text(config.name)
        if text:
            output.add_secret(text)
            tokens.append(Token(config.name, config.host, config.username, text.encode()))
    return tokens


def index(tokens: list[Token]) -> str:
    return "".join(f"{token.host} {token.username} {token.file_name}\n" for token in tokens)
