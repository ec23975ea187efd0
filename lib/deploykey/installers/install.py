"""Installing the app (a requirements file with uv or pip; uv.lock, poetry.lock or Pipfile.lock
with its own tool: see installer.py) into the right Python, at the app's run-time path.

Where (DEPLOYKEY_INSTALL):
- `python`: the Python an earlier buildpack put in `BUILD_DIR/.heroku/python`;
- `venv`: a virtual environment in the app (`BUILD_DIR/.venv`);
- `off`: nothing here; ssh is handed to the next buildpack (see heroku.py).
A virtual environment bakes its own absolute path into its scripts, and the app runs from another
path than it is built in (`/app` vs `/tmp/build_<hash>` on Heroku). So the kit builds it where it will
run: through a symlink `APP_PATH -> BUILD_DIR` when APP_PATH does not exist, or at APP_PATH/.venv when
it does (Heroku's HOME=/app), then moves it into the build dir. heroku-buildpack-python does the same
with a `/app/.heroku/python` symlink.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from deploykey.core import output, run
from deploykey.core.errors import UserError
from deploykey.fetch import mirrors
from deploykey.fetch.mirrors import Mirrors
from deploykey.installers import installer, keptvenv
from deploykey.installers.installer import Installer
from deploykey.leak.scrub import Cleanup
from deploykey.secrets import keydir
from deploykey.secrets.config import Settings

HEROKU_PYTHON = Path(".heroku/python")
PROFILE_SCRIPT = Path(".profile.d/deploykey.sh")


@dataclass(frozen=True)
class Target:
    kind: str  # python | venv | off
    reason: str
    relative: Path | None = None  # the environment, relative to the app dir

    def describe(self, settings: Settings) -> str:
        if self.relative is None:
            return "nothing (ssh is handed to the next buildpack)"
        return f"{Path(settings.get('DEPLOYKEY_APP_PATH'), self.relative)} ({self.kind}; {self.reason})"


def choose(app_dir: Path, settings: Settings, environ: Mapping[str, str] | None = None) -> Target:
    environ = os.environ if environ is None else environ
    mode = settings.install
    venv = Path(settings.get("DEPLOYKEY_VENV"))
    has_python = (app_dir / HEROKU_PYTHON / "bin" / "python").exists()
    if mode == "python" and not has_python:
        raise UserError(
            "config::setting",
            name="DEPLOYKEY_INSTALL",
            value="python (there is no .heroku/python in the app: the Python buildpack has not run yet)",
            choices="auto, python, venv, off",
            default="auto",
        )
    if mode == "python" or (mode == "auto" and has_python):
        return Target("python", "the Python installed by an earlier buildpack", HEROKU_PYTHON)
    if mode == "venv":
        return Target("venv", "DEPLOYKEY_INSTALL=venv", venv)
    if mode == "off":
        return Target("off", "DEPLOYKEY_INSTALL=off")
    if environ.get("STACK", "").startswith("heroku-"):
        return Target("off", "on Heroku with no .heroku/python yet: the Python buildpack follows")
    return Target("venv", "no .heroku/python in the app", venv)


@dataclass(frozen=True)
class Job:
    """One install: the installer, the requirements, the child environment (the installer's own
    settings included), where it runs, the mirrors it installs from, the pinned commits (uv)."""

    installer: Installer
    requirements: Path
    env: Mapping[str, str]
    cwd: Path
    mirrors: Mirrors
    overrides: Path | None = None
    keep: bool = False  # the installer's cache is a build cache: a later build sees what it keeps
    # Only restore the environment kept for the lockfile (keptvenv.py), or fail: a warm build
    # that fetched nothing, so has no mirror to install from (build.install_cycle).
    kept_only: bool = False


def install(target: Target, app_dir: Path, settings: Settings, job: Job, cleanup: Cleanup) -> None:
    assert target.relative is not None
    app_path = Path(settings.get("DEPLOYKEY_APP_PATH"))
    fresh = target.kind == "venv" and not (app_dir / target.relative).exists()
    try:
        with at_run_time_path(
            app_dir, app_path, target.relative, cleanup, create=target.kind == "venv"
        ) as where:
            into(where, target.kind == "venv", job)
    except BaseException:
        if fresh:  # leave nothing half-written: a venv this build created goes with the failure
            shutil.rmtree(app_dir / target.relative, ignore_errors=True)
        raise
    if target.kind == "venv":
        at_boot = _rewrite_editables(app_dir, app_path, target.relative)
        _write_profile(app_dir, app_path / target.relative, at_boot)


# Files in which editable installs name their source's absolute path (heroku-buildpack-python v351
# bin/compile rewrites the same ones).
EDITABLE_FILES = ("*.egg-link", "*.pth", "__editable___*_finder.py")


def _rewrite_editables(app_dir: Path, app_path: Path, relative: Path) -> bool:
    """Editable installs record where their source was when they were built. Paths inside the
    environment (`-e git+...` checkouts in its src/) are rewritten to the run-time path now; paths
    elsewhere in the app (`-e .`) are rewritten at boot by the profile script, as
    heroku-buildpack-python v351 does (bin/compile: later buildpacks may still use them at the
    build dir's path). Returns whether any file needs the boot-time rewrite."""
    venv = app_dir / relative
    build = {str(app_dir), str(app_dir.resolve())}
    at_boot = False
    for pattern in EDITABLE_FILES:
        for path in venv.glob(f"lib/python*/site-packages/{pattern}"):
            if path.is_symlink() or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            fixed = text
            for prefix in build:
                fixed = fixed.replace(f"{prefix}/{relative}", str(app_path / relative))
            if fixed != text:  # a new file renamed over it: the old may be a link into uv's cache
                temporary = path.with_name(f".{path.name}.deploykey")
                temporary.write_text(fixed, encoding="utf-8", errors="surrogateescape")
                temporary.replace(path)
            at_boot = at_boot or any(prefix in fixed for prefix in build)
    return at_boot


def into(where: Path, create: bool, job: Job) -> None:
    """Install the requirements file or the lockfile into the Python environment at `where` (made
    first if `create`), the path it has at run time."""
    env = dict(job.env)
    if job.installer.name == "uv":
        env["UV_LINK_MODE"] = installer.link_mode(job.installer.cache, where)
    if job.installer.lockfile is not None:
        argv, env = job.installer.locked(where, env)
        fresh = create and (not where.exists() or not any(where.iterdir()))
        kept = keptvenv.of(job.installer, argv, env, job.cwd, where) if fresh and job.keep else None
        if kept is not None and kept.restore(where):
            return
        if job.kept_only:  # nothing was fetched to install from: the next build will
            if kept is not None:
                kept.drop()
            raise UserError("install::kept-lost", path=where, installer=job.installer.shown)
        if create and job.installer.name == "uv" and fresh:
            check_venv_path(where)  # `uv sync` makes the environment itself (Installer.locked)
        elif create:
            _create_venv(where, job)
        _run(argv, job, env)
        if kept is not None:
            kept.save(where)
        return
    if create:
        _create_venv(where, job)
    python = where / "bin" / "python"
    argv = job.installer.install_argv(
        python, job.requirements, where / "src", (), job.overrides, env
    )
    _run(argv, job, env)


def kept_for(where: Path, job: Job) -> keptvenv.Kept | None:
    """Where `into(where, True, job)` would find the environment of job's lockfile kept, said
    nothing, when a fresh environment there would be kept at all (else None)."""
    fresh = not where.exists() or not any(where.iterdir())
    if job.installer.lockfile is None or not job.keep or not fresh:
        return None
    env = dict(job.env)
    if job.installer.name == "uv":
        env["UV_LINK_MODE"] = installer.link_mode(job.installer.cache, where)
    argv, env = job.installer.locked(where, env)
    return keptvenv.of(job.installer, argv, env, job.cwd, where, say=False)


def with_python(python: Path, job: Job, extra: Sequence[str]) -> None:
    """Install with an existing Python and the installer's own options (--target DIR, --user)."""
    argv = job.installer.install_argv(python, job.requirements, None, extra, job.overrides, job.env)
    _run(argv, job)


def _run(argv: list[str], job: Job, env: Mapping[str, str] | None = None) -> None:
    output.detail("$ " + " ".join(argv))
    result = run.run(argv, env=job.env if env is None else env, cwd=job.cwd, on_line=output.detail)
    if not result.ok:
        raise _classify(result, job)


def check_venv_path(where: Path) -> None:
    """A virtual environment can be made at `where`: nothing is there, an environment is (it is
    updated), or an empty directory is: a Dockerfile makes one for its non-root USER as root
    (`RUN mkdir /opt/venv && chown app /opt/venv`) where that user could not make it."""
    if not where.exists() or (where / "pyvenv.cfg").exists():
        return
    held = sorted(p.name for p in where.iterdir()) if where.is_dir() else None
    if held is None or held:
        found = "It is a file." if held is None else f"It holds: {', '.join(held[:10])}."
        raise UserError("install::not-a-venv", path=where, found=found)


def _create_venv(where: Path, job: Job) -> None:
    check_venv_path(where)
    argv = job.installer.venv_argv(where)
    output.detail("$ " + " ".join(argv))
    result = run.run(argv, env=job.env, cwd=job.cwd, on_line=output.detail)
    if not result.ok:
        raise UserError(
            "install::failed", installer="venv", status=result.status, command=result.command
        )


def _classify(result: run.Result, job: Job) -> UserError:
    """The installer's failure, named after the most specific cause found in its output: a private
    repository the fetch did not bring (the keys were gone by then), or the installer's own."""
    missing = mirrors.not_fetched(result.text, job.mirrors.root)
    if missing:
        return UserError(
            "install::not-fetched",
            repos=", ".join(missing),
            installer=job.installer.shown,
        )
    chosen = job.installer
    if chosen.lockfile is not None and installer.lock_outdated(chosen.name, result.text):
        return UserError(
            "install::lock-outdated",
            tool=chosen.shown,
            file=chosen.lockfile,
            manifest="Pipfile" if chosen.name == "pipenv" else "pyproject.toml",
            command=" ".join((chosen.name, *installer.LOCKED[chosen.name][1])),
            lock=installer.LOCKED[chosen.name][2],
        )
    return UserError(
        "install::failed",
        installer=chosen.shown,
        status=result.status,
        command=result.command,
    )


@contextmanager
def at_run_time_path(
    app_dir: Path, app_path: Path, relative: Path, cleanup: Cleanup, create: bool
) -> Iterator[Path]:
    """Yield the path under which `app_dir/relative` is seen as `app_path/relative` while building."""
    build = app_dir / relative
    run_time = app_path / relative
    if app_path.resolve() == app_dir.resolve() or (
        run_time.exists() and run_time.resolve() == build.resolve()
    ):
        yield run_time
        return
    _remove_stale_link(app_path)
    busy = in_use(app_path)
    if busy is not None:
        raise busy
    if app_path.is_symlink():
        # A link that is not the build dir: building through it would write somewhere else.
        raise UserError("path::symlink", path=app_path)
    if not app_path.exists():
        mark = _mark(app_path)
        try:
            held = _write_mark(mark, app_dir.resolve())
            try:
                app_path.symlink_to(app_dir.resolve(), target_is_directory=True)
            except BaseException:
                mark.unlink()
                held.close()
                raise
        except OSError as exc:
            raise UserError(
                "install::app-path",
                app_path=app_path,
                reason=f"Linking it to the build dir failed: {exc.strerror}.",
            ) from None

        def unlink() -> None:
            app_path.unlink()
            mark.unlink(missing_ok=True)
            held.close()

        cleanup.add(f"the link {app_path} -> {app_dir}", unlink)
        yield run_time
        return
    if run_time.exists() or run_time.is_symlink():
        raise UserError(
            "install::app-path",
            app_path=app_path,
            reason=f"{run_time} already exists and is not the build dir's {relative}.",
        )
    if not create:
        # An existing environment (.heroku/python): reach it through a link, as the Python buildpack does.
        made = [p for p in reversed(run_time.parents) if not p.exists()]
        run_time.parent.mkdir(parents=True, exist_ok=True)
        run_time.symlink_to(build.resolve(), target_is_directory=True)
        cleanup.add(f"the link {run_time}", lambda: _remove_link(run_time, made))
        yield run_time
        return
    # A new environment, with app_path an existing directory: build it there for real, then move it.
    cleanup.add(
        f"the partial environment {run_time}", lambda: shutil.rmtree(run_time, ignore_errors=True)
    )
    yield run_time
    if build.exists():
        shutil.rmtree(build)
    shutil.move(str(run_time), str(build))


def _mark(app_path: Path) -> Path:
    """Next to the link APP_PATH -> BUILD_DIR, while it exists: which build made it, so that after a
    SIGKILL (no cleanup runs) the next build knows the link for one of ours and removes it. A link
    has no room for a mark of its own (Linux allows no user xattrs on symlinks)."""
    return app_path.parent / f".{app_path.name}.deploykey-link"


def _write_mark(mark: Path, target: Path) -> IO[bytes]:
    """The mark, locked by this build until it removes the link or dies (keydir.write_held): the
    lock, not /proc, tells a later build whether the link is still in use."""
    return keydir.write_held(mark, f"{target}\n{keydir.stamp()}\n".encode(), 0o644)


def in_use(app_path: Path) -> UserError | None:
    """The error to give when APP_PATH is the link another build made to its build dir and still
    holds (its mark names the link's target, and its lock is held: keydir.if_ended), else None.
    Asked before the fetch too, so that the build fails before it fetches."""
    mark = _mark(app_path)
    if not app_path.is_symlink() or mark.is_symlink():
        return None
    try:
        lines = mark.read_text(errors="replace").splitlines()
    except OSError:
        return None
    words = lines[1].split() if len(lines) == 2 else []
    if words[:1] != ["held"] or str(app_path.readlink()) != lines[0]:
        return None
    with keydir.if_ended(mark) as left:
        if left is not None:  # that build has ended: its link is stale, removed before the install
            return None
    return UserError("install::app-path-busy", app_path=app_path, other=lines[0], pid=words[1])


def _remove_stale_link(app_path: Path) -> None:
    """Remove the link APP_PATH -> BUILD_DIR a killed build left, and its mark. Only a link the mark
    names, of a build that has ended (its lock on the mark is gone): a link the user made, or one a
    running build uses, stays."""
    mark = _mark(app_path)
    with keydir.if_ended(mark) as left:
        if left is None or len(left[0]) != 2:
            return
        (target, _stamp), pid = left
        if app_path.is_symlink() and str(app_path.readlink()) == target:
            app_path.unlink()
            output.detail(
                f"removed the link {app_path} -> {target}, left by a build that ended without "
                f"cleaning up (pid {pid}, killed?)"
            )
        mark.unlink(missing_ok=True)


def _remove_link(link: Path, made: list[Path]) -> None:
    link.unlink()
    for directory in reversed(made):
        directory.rmdir()


def _write_profile(app_dir: Path, venv: Path, rewrite_editables: bool) -> None:
    """Heroku sources .profile.d/*.sh at dyno start: put the venv first on PATH at run time, and
    point path-based editable installs at the run-time app path."""
    script = app_dir / PROFILE_SCRIPT
    script.parent.mkdir(exist_ok=True)
    lines = [
        "# Written by deploykey: the app's virtual environment.",
        f'export VIRTUAL_ENV="{venv}"',
        f'export PATH="{venv}/bin:$PATH"',
    ]
    if rewrite_editables:
        names = " -o ".join(f"-name {shlex.quote(pattern)}" for pattern in EDITABLE_FILES)
        expression = shlex.quote(f"s#{app_dir}#{venv.parent}#g")
        lines += [
            "# Editable installs (-e .) name the build dir: the app runs from here.",
            f'find "$VIRTUAL_ENV"/lib/python*/site-packages/ -type f \\( {names} \\) '
            f"-exec sed -i -e {expression} {{}} +",
        ]
    script.write_text("\n".join(lines) + "\n")
