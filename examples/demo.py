"""The main job, end to end on one machine: build examples/app as Heroku would, with a deploy key.

1. Start a local OpenSSH server that serves git like GitHub (tests/support/gitserver.py), holding
   examples/private-utils as acme/private-utils, tag v1.0.
2. Generate a deploy key (never stored anywhere but a temp dir) and grant it that one repository.
3. Lay out a Heroku build: BUILD_DIR (a copy of examples/app plus a deploykey.yml that points
   github.com at the local server), CACHE_DIR, ENV_DIR/DEPLOY_KEY (base64 of the key, the seeds' way).
4. Run bin/compile (or bin/compile --dry-run), then "release" the slug to its run-time path and run
   the app from there, and check the slug for the key with an independent search.
Needs root (sshd switches to the `git` user) and openssh-server: `bash .ci/setup` installs it.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "tests"))

from support.gitserver import GitServer  # noqa: E402


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*") if p.is_file()}


def main(argv: list[str]) -> int:
    dry_run = "--dry-run" in argv
    if not Path("/usr/sbin/sshd").exists():
        say("openssh-server is not installed: run `bash .ci/setup` first (as root)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="deploykey-demo-"))
    server = GitServer.create()
    try:
        server.add_repo("acme/private-utils", files(KIT / "examples" / "private-utils"))
        server.start()
        say(f"git server on 127.0.0.1:{server.port} serving acme/private-utils (tag v1.0)")

        key = work / "deploy_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "demo", "-f", str(key)],
            check=True,
        )
        server.grant("demo", key.with_suffix(".pub").read_text(), ["acme/private-utils"])
        say("generated a deploy key and added it to acme/private-utils only")

        build, cache, env, run = (work / name for name in ("build", "cache", "env", "run"))
        shutil.copytree(KIT / "examples" / "app", build)
        for directory in (cache, env, run):
            directory.mkdir()
        (build / "deploykey.yml").write_text(server.deploykey_yml())
        (env / "DEPLOY_KEY").write_text(base64.b64encode(key.read_bytes()).decode())
        app_path = run / "app"
        say(f"BUILD_DIR={build} CACHE_DIR={cache} ENV_DIR={env}; the app will run from {app_path}")

        compile_env = {**os.environ, "DEPLOYKEY_APP_PATH": str(app_path)}
        command = [str(KIT / "bin" / "compile"), str(build), str(cache), str(env)]
        command += ["--dry-run"] if dry_run else []
        say("$ " + " ".join(command))
        result = subprocess.run(command, env=compile_env)
        if result.returncode != 0 or dry_run:
            say(f"bin/compile exited with {result.returncode}")
            return result.returncode

        shutil.copytree(build, app_path, symlinks=True)  # the slug, extracted where it runs
        ran = subprocess.run(
            [str(app_path / ".venv" / "bin" / "python"), "app.py"],
            cwd=app_path,
            capture_output=True,
            text=True,
        )
        say(f"the released app says: {ran.stdout.strip() or ran.stderr.strip()}")
        secret = key.read_text().splitlines()[2]
        leaked = [
            str(p)
            for p in app_path.rglob("*")
            if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()
        ]
        say(
            "independent check of the slug: "
            + (f"KEY FOUND in {leaked}" if leaked else "no copy of the key")
        )
        return 1 if leaked or ran.returncode else 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
