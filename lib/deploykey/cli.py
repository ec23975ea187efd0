"""The `deploykey` command line: a flat dispatch to one function per command, each returning an int.

Each command names the platform it serves (errors.use) before anything can fail, so that every
error's advice on setting a key is that platform's own: Heroku config vars, a BuildKit secret, a
CI secret, a CNB binding, or the local .env file.

One handler renders every failure: a UserError with its wording (exit 1, or 2 for usage), an
interruption after the scrub (128 + signal), anything else as a bug in the kit (exit 3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from deploykey import __version__
from deploykey.core import errors, output
from deploykey.core.errors import EXIT_BUG, EXIT_USAGE, PLATFORMS, Interrupted, UserError


def _detect(args: argparse.Namespace) -> int:
    """Both platforms. A CNB lifecycle sets CNB_* variables and passes PLATFORM_DIR PLAN_PATH;
    Heroku passes BUILD_DIR and no CNB_* variable. The variables decide, not the count."""
    from deploykey.platforms import cnb

    if cnb.under_lifecycle():
        errors.use(PLATFORMS["cnb"])
        return cnb.detect(args.arguments)
    from deploykey.platforms import heroku

    errors.use(PLATFORMS["heroku"])
    if len(args.arguments) != 1:
        raise UserError(
            "usage",
            message="bin/detect takes BUILD_DIR (Heroku), or runs under a Cloud Native Buildpacks "
            "lifecycle (CNB_PLATFORM_DIR set)",
            command="deploykey detect",
        )
    return heroku.detect(args.arguments[0])


def _build(args: argparse.Namespace) -> int:
    from deploykey.platforms import cnb

    errors.use(PLATFORMS["cnb"])
    return cnb.build_step(args.arguments)


def _cnb_scan(_args: argparse.Namespace) -> int:
    from deploykey.platforms import cnb

    errors.use(PLATFORMS["cnb"])
    return cnb.scan_step()


def _scan_buildpack(args: argparse.Namespace) -> int:
    from deploykey.kit import kitfile

    return kitfile.write_scan_buildpack(args.directory)


def _pyz(args: argparse.Namespace) -> int:
    from deploykey.core import output
    from deploykey.kit import kitfile

    kitfile.write_pyz(Path(args.path))
    output.detail(f"wrote {args.path}: run it with `python3 {args.path} COMMAND`")
    return 0


def _install(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=False))
    return docker.install_command(
        args.requirement,
        args.venv,
        args.target,
        args.user,
        args.env_dir,
        tuple(args.key_file),
        args.agent,
        args.cache_dir or os.environ.get("DEPLOYKEY_CACHE_DIR"),
        args.fetched,
    )


def _fetch(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=False))
    return docker.fetch_command(
        args.requirement,
        args.env_dir,
        tuple(args.key_file),
        args.agent,
        args.cache_dir or os.environ.get("DEPLOYKEY_CACHE_DIR"),
    )


def _setup(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=True))
    if not args.shell:
        raise UserError("usage", message="deploykey setup: give --shell", command="deploykey setup")
    return docker.setup_command(
        args.requirement,
        args.env_dir,
        tuple(args.key_file),
        args.cache_dir or os.environ.get("DEPLOYKEY_CACHE_DIR"),
    )


def _cleanup(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=True))
    return docker.cleanup_command(tuple(args.paths), args.shell, args.env_dir, tuple(args.key_file))


def _scan(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=False))
    return docker.scan_command(
        tuple(args.paths),
        args.env_dir,
        tuple(args.key_file),
        args.context,
        args.cache_dir or os.environ.get("DEPLOYKEY_CACHE_DIR"),
    )


def _scan_image(args: argparse.Namespace) -> int:
    from deploykey.platforms import docker

    errors.use(docker.platform(ci=False))
    return docker.scan_image_command(args.archive, args.env_dir, tuple(args.key_file))


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-dir",
        metavar="DIR",
        help="config var files or a .env file, besides DEPLOY_KEY* variables and /run/secrets",
    )
    parser.add_argument(
        "--key-file",
        metavar="FILE",
        action="append",
        default=[],
        help="a private key file (repeatable)",
    )


def _compile(args: argparse.Namespace) -> int:
    from deploykey.platforms import heroku

    errors.use(heroku.platform(args.env_dir, args.dry_run))
    return heroku.compile(args.build_dir, args.cache_dir, args.env_dir, dry_run=args.dry_run)


def _release(args: argparse.Namespace) -> int:
    from deploykey.platforms import heroku

    errors.use(PLATFORMS["heroku"])
    return heroku.release(args.build_dir)


def _pre_compile(_args: argparse.Namespace) -> int:
    from deploykey.platforms import apphooks

    errors.use(PLATFORMS["heroku"])
    return apphooks.pre_compile()


def _post_compile(_args: argparse.Namespace) -> int:
    from deploykey.platforms import apphooks

    errors.use(PLATFORMS["heroku"])
    return apphooks.post_compile()


def _doctor(args: argparse.Namespace) -> int:
    from deploykey.platforms import local

    errors.use(errors.local(local.env_source(args.app_dir, args.env_dir)))
    return local.doctor(args.app_dir, args.env_dir)


def _hooks(args: argparse.Namespace) -> int:
    from deploykey.platforms import apphooks

    return apphooks.write_hooks(args.app_dir, post_only=args.post_compile_only)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError("usage", message=f"{self.prog}: {message}", command=self.prog)


def parser() -> argparse.ArgumentParser:
    top = _Parser(
        prog="deploykey",
        description="Private git dependencies in builds, with a deploy key that never ships.",
    )
    top.add_argument("--version", action="version", version=f"deploykey {__version__}")
    commands = top.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_: str,
        aliases: Sequence[str] = (),
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        sub.set_defaults(func=func)
        return sub

    sub = add("detect", _detect, "bin/detect: does this app fetch private git dependencies?")
    sub.add_argument(
        "arguments",
        metavar="ARG",
        nargs="*",
        help="Heroku: BUILD_DIR; CNB: PLATFORM_DIR PLAN_PATH (the lifecycle's, with CNB_*)",
    )
    sub = add(
        "build", _build, "CNB bin/build: fetch into mirrors for the next buildpacks, or install."
    )
    sub.add_argument(
        "arguments",
        metavar="ARG",
        nargs="*",
        help="LAYERS_DIR PLATFORM_DIR PLAN_PATH (the lifecycle's)",
    )
    add("cnb-scan", _cnb_scan, "CNB scan step: scan the image and the cache for the keys.")
    sub = add("scan-buildpack", _scan_buildpack, "Write the deploykey/scan buildpack into DIR.")
    sub.add_argument("directory", metavar="DIR")
    sub = add("pyz", _pyz, "Write the kit as one file (a zipapp), e.g. for a Docker build context.")
    sub.add_argument("path", metavar="PATH")
    sub = add(
        "install",
        _install,
        "Docker/CI: set up, install the requirements, scrub, scan: one process.",
    )
    sub.add_argument(
        "-r",
        "--requirement",
        metavar="FILE",
        help="install this requirements file (default: the app's uv.lock, poetry.lock, "
        "Pipfile.lock or requirements.txt decides, as heroku-buildpack-python)",
    )
    where = sub.add_mutually_exclusive_group()
    where.add_argument(
        "--venv", metavar="PATH", help="into a virtual environment (made if missing)"
    )
    where.add_argument("--target", metavar="PATH", help="pip install --target PATH")
    where.add_argument("--user", action="store_true", help="pip install --user")
    sub.add_argument(
        "--agent", action="store_true", help="use the ssh agent (RUN --mount=type=ssh), no key"
    )
    sub.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep the installer's cache here between builds (RUN --mount=type=cache); "
        "default $DEPLOYKEY_CACHE_DIR, else none",
    )
    sub.add_argument(
        "--fetched",
        action="store_true",
        help="install from what `deploykey fetch` put in --cache-dir, with no key (the second "
        "RUN of a two-step Docker build)",
    )
    _key_options(sub)
    sub = add(
        "fetch",
        _fetch,
        "Docker: fetch into the cache mount with the keys, for a later `install --fetched`.",
    )
    sub.add_argument(
        "-r", "--requirement", metavar="FILE", help="as for install: what will be installed"
    )
    sub.add_argument(
        "--agent", action="store_true", help="use the ssh agent (RUN --mount=type=ssh), no key"
    )
    sub.add_argument(
        "--cache-dir", metavar="DIR", help="the cache mount the install step reads (required)"
    )
    _key_options(sub)
    sub = add(
        "setup", _setup, 'CI: `eval "$(deploykey setup --shell)"` sets git up for your own install.'
    )
    sub.add_argument("--shell", action="store_true", help="print shell exports on stdout")
    sub.add_argument("-r", "--requirement", metavar="FILE", help="check these requirements too")
    sub.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep the mirrors here between jobs (a CI cache); default $DEPLOYKEY_CACHE_DIR, "
        "else a temp dir that `cleanup` removes",
    )
    _key_options(sub)
    sub = add("cleanup", _cleanup, "CI: remove what `setup` made, then scan PATHs (default: .).")
    sub.add_argument("paths", metavar="PATH", nargs="*")
    sub.add_argument(
        "--shell", action="store_true", help="print `unset` for the variables setup exported"
    )
    _key_options(sub)
    sub = add("scan", _scan, "Look for the keys and tokens in files: exit 0 clean, 1 found.")
    sub.add_argument("paths", metavar="PATH", nargs="+")
    sub.add_argument(
        "--context",
        action="store_true",
        help="the PATHs came with a Docker build context: a key there is also in a cached layer",
    )
    sub.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the kit's dependencies and the scan's record are kept (a BuildKit cache "
        "mount); not scanned",
    )
    _key_options(sub)
    sub = add(
        "scan-image", _scan_image, "Look for the keys in an image archive (OCI or docker save)."
    )
    sub.add_argument("archive", metavar="IMAGE.tar")
    _key_options(sub)
    sub = add(
        "compile",
        _compile,
        "Heroku bin/compile: install with the deploy key, scrub, check for leaks.",
    )
    sub.add_argument("build_dir", metavar="BUILD_DIR")
    sub.add_argument("cache_dir", metavar="CACHE_DIR")
    sub.add_argument(
        "env_dir", metavar="ENV_DIR", help="a directory of config var files, or a .env file"
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="validate and print the plan; write nothing"
    )
    sub = add("release", _release, "Heroku bin/release: print the release YAML.")
    sub.add_argument("build_dir", metavar="BUILD_DIR")
    add(
        "pre-compile",
        _pre_compile,
        "App hook: set ssh up for heroku-buildpack-python's pip.",
        ["pre_compile"],
    )
    add(
        "post-compile",
        _post_compile,
        "App hook: remove the key and the ssh setting, check for leaks.",
        ["post_compile"],
    )
    sub = add("doctor", _doctor, "Check that every private requirement can be fetched.")
    sub.add_argument("app_dir", metavar="APP_DIR", nargs="?", default=".")
    sub.add_argument(
        "env_dir",
        metavar="ENV_DIR",
        nargs="?",
        help="config var files or a .env file (default: $ENV_DIR, else APP_DIR/.env)",
    )
    sub = add(
        "hooks",
        _hooks,
        "Write bin/pre_compile, bin/post_compile and bin/deploykey.pyz into an app.",
    )
    sub.add_argument("app_dir", metavar="APP_DIR", nargs="?", default=".")
    sub.add_argument(
        "--post-compile-only",
        action="store_true",
        help="only the post_compile hook (buildpack users)",
    )
    return top


def undumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0): no other process of this user (a package's build code run later
    in the build) can read this one's memory, environment or open files through /proc/PID, nor
    ptrace it, while it holds a key for the leak check. Children are unaffected (exec resets it).
    Only the superuser (CAP_SYS_PTRACE) still can: build as a user, as CNB lifecycles do."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def main(argv: Sequence[str] | None = None) -> int:
    undumpable()
    try:
        args = parser().parse_args(argv)
        result: int = args.func(args)
        return result
    except UserError as error:
        output.error(error)
        return error.exit_code
    except Interrupted as interrupted:
        output.error(UserError("build::interrupted", signal=interrupted.name))
        return 128 + interrupted.signum
    except KeyboardInterrupt:
        output.error(UserError("build::interrupted", signal="SIGINT"))
        return 130
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit 3
        output.bug(exc)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
