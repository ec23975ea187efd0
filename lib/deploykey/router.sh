#!/bin/sh
# deploykey's ssh router, written into a build's key dir; git runs it as its ssh command:
#   sh ROUTER [-o OPTION] [-p PORT] [-4|-6] [USER@]HOST 'git-upload-pack '\''/org/repo.git'\'''
# GitHub deploy keys open one repository each, and ssh picks keys by host, not by repository, so
# this reads the repository from git's remote command, finds the first line of `routes`
# (HOST PATTERN ALIAS) whose host is HOST and whose glob PATTERN matches it, and runs the real ssh
# with the kit's config against ALIAS, an ssh_config Host block holding that one key. Transitive
# dependencies and submodules are fetched by git the same way, so they are routed too.
set -eu
# The key dir, without forking dirname: git runs `sh KEY_DIR/ssh`, always a path with a slash.
case "$0" in
  */*) dir=${0%/*} ;;
  *) dir=. ;;
esac
dir=${dir:-/}
ssh=@SSH@

newline='
'
last=""
for arg in "$@"; do last=$arg; done
repo=""
case "$last" in
  git-upload-pack\ * | git-receive-pack\ * | git-upload-archive\ *)
    # Every ' and " dropped (git quotes the path: '/org/repo.git'), in the shell itself.
    rest=${last#* }
    repo=""
    while :; do
      case "$rest" in
        *[\'\"]*)
          before=${rest%%[\'\"]*}
          repo=$repo$before
          rest=${rest#"$before"?}
          ;;
        *)
          repo=$repo$rest
          break
          ;;
      esac
    done
    # Lowercased by tr, whose $(...) also drops trailing newlines: only when that changes
    # anything (an upper-case letter, a trailing newline), so the result is tr's for every path.
    case "$repo" in
      *[ABCDEFGHIJKLMNOPQRSTUVWXYZ]* | *"$newline")
        repo=$(printf '%s' "$repo" | tr 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' 'abcdefghijklmnopqrstuvwxyz')
        ;;
    esac
    repo=${repo#/}
    repo=${repo%/}
    repo=${repo%.git}
    ;;
esac

# Rebuild the arguments, with the destination (the first operand) replaced by its alias.
first=1
found=0
takes_value=0
for arg in "$@"; do
  if [ "$first" = 1 ]; then
    set --
    first=0
  fi
  if [ "$takes_value" = 1 ]; then
    takes_value=0
  elif [ "$found" = 0 ]; then
    case "$arg" in
      -[BbcDEeFIiJLlmOopQRSWw]) takes_value=1 ;;
      -*) ;;
      *)
        found=1
        user=""
        host=$arg
        case "$arg" in *@*) user="${arg%@*}@" host=${arg##*@} ;; esac
        while read -r route_host pattern alias; do
          [ "$route_host" = "$host" ] || continue
          # shellcheck disable=SC2254 # the pattern is a glob on purpose (acme/*)
          case "$repo" in $pattern)
            arg="$user$alias"
            break
            ;;
          esac
        done <"$dir/routes"
        ;;
    esac
  fi
  set -- "$@" "$arg"
done

# A slot: at most @CONNECTIONS@ connections at once (uv starts one per git dependency; an OpenSSH
# server drops new ones beyond 10 unauthenticated). The lock is this shell's fd 9, held while ssh
# runs (ssh closes its own copy), so ssh is a child here, not exec'd. No flock(1): no limit.
if [ -w "$dir" ] && command -v flock >/dev/null 2>&1; then
  slot=0
  while [ "$slot" -lt @CONNECTIONS@ ]; do
    exec 9>"$dir/slot.$slot"
    if flock -n 9; then break; fi
    slot=$((slot + 1))
  done
  if [ "$slot" = @CONNECTIONS@ ]; then
    exec 9>"$dir/slot.$(($$ % @CONNECTIONS@))"
    flock 9
  fi
fi
status=0
"$ssh" -F "$dir/ssh_config" "$@" || status=$?
exit "$status"
