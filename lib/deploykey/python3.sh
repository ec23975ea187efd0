# shellcheck shell=bash
# Sourced by the kit's programs (bin/) and, written into them, by the app hooks: which python3 runs
# the kit. The first on PATH in a directory this user cannot change: not one it can write, nor
# swap (a writable directory above it, outside a sticky one such as /tmp), as written and as
# resolved, nor a link to a file in such a place. The kit finds every program it runs with a
# secret by the same rule (childenv.trusted_path); it starts with the interpreter, which reads the
# key. Where HOME outlives the build (~/.local/bin first on PATH) or builds share /app
# (/app/.heroku/python/bin, first on PATH when heroku-buildpack-python runs pre_compile), an earlier
# build's code leaves a python3 there. As root, the first on PATH: root writes everything
# (SECURITY.md). Every other program it and bin/ run is the system's (`command -p`: /bin:/usr/bin),
# and bin/'s shell is /bin/bash, not `env bash`, which looks bash up on PATH too.

# Sets python3, or says why there is none and returns 1.
# shellcheck disable=SC2034
deploykey_python3() {
  local entry found="" target IFS=:
  for entry in $PATH; do
    case $entry in /*) ;; *) continue ;; esac
    if [ ! -f "$entry/python3" ] || [ ! -x "$entry/python3" ]; then continue; fi
    if [ "$EUID" = 0 ]; then
      python3=$entry/python3
      return 0
    fi
    target=$entry
    if [ -L "$entry/python3" ]; then target=$(command -p readlink -f "$entry/python3") && target=${target%/*}; fi
    if ! _deploykey_changeable "$entry" && { [ "$target" = "$entry" ] || ! _deploykey_changeable "$target"; }; then
      python3=$entry/python3
      return 0
    fi
    found=${found:-$entry/python3}
  done
  if [ -n "$found" ]; then
    echo " !     deploykey: the only python3 on PATH is $found, which this user ($(command -p id -un)) can" >&2
    echo " !     change: an earlier build's code could have replaced it, and it would run with the key." >&2
    echo " !     Fix: install python3 (3.10 or newer) where only root writes (the build image's" >&2
    echo " !     /usr/bin/python3; Debian and Ubuntu: apt-get install python3), or put such a directory" >&2
    echo " !     on PATH. (tool::writable: README.md#tool-writable)" >&2
  else
    echo " !     deploykey needs python3 (3.10 or newer) on the build image." >&2
  fi
  return 1
}

# Whether this user can change what directory $1 holds (childenv.writable): write it, or rename it
# or a directory above it, as written and as resolved.
_deploykey_changeable() {
  local path written=$1 resolved parent
  resolved=$(cd -P -- "$1" 2>/dev/null && pwd) || return 0
  while [ "${#written}" -gt 1 ] && [ "${written%/}" != "$written" ]; do written=${written%/}; done
  set -- "$written"
  [ "$resolved" = "$written" ] || set -- "$written" "$resolved" # each once, as childenv's
  for path; do
    [ -w "$path" ] && return 0
    while [ "$path" != / ]; do
      parent=${path%/*}
      parent=${parent:-/}
      if [ -w "$parent" ] && ! { [ -k "$parent" ] && [ ! -O "$path" ]; }; then return 0; fi
      path=$parent
    done
  done
  return 1
}
