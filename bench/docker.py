"""Benchmark: a Docker image rebuild after a change to the app only, deploykey against the recipe.

    python3 bench/docker.py [--n 3] [--runs 3]

Needs what .ci/setup installs (Debian's docker.io, debootstrap); run as root. It starts its own
dockerd (tests/support/engine.py: Engine 20.10 with BuildKit, private data root) and a local OpenSSH git
server (tests/support/gitserver.py) with N private packages; the app needs them and `requests` (with its
dependencies), which both builds take from a wheelhouse in the build context instead of PyPI. Each
build starts from an empty builder cache (`docker builder prune --all`; each run starts with the
next build in turn) and times `docker build`:
  recipe: the seeds' Dockerfile (the key as a build argument written to a file, `ssh-keyscan`,
          `pip install --user -r requirements.txt` after copying requirements.txt alone, a final
          stage that copies ~/.local), cold, then again after a change to app.py;
  recipe, whole source first: the same, but `COPY . .` before the install, as an app installed
          from its own source (`pip install .`, `-e .`, a pyproject app) must;
  deploykey: examples/docker/Dockerfile as shipped (the kit and the manifests copied alone, then
          `deploykey fetch` with the key as a BuildKit secret and the cache mount, `install
          --fetched` without it, then `COPY . .` and `deploykey scan --context` of the source
          with the secret), cold, then again after the same change; the
          wheelhouse is copied to /wheels before the fetch, as the recipe copies it before its
          install;
  deploykey, source before the install: the same with `COPY . .` between the fetch and the
          install (examples/docker/README.md, "An app installed from its own source"), compared
          with "recipe, whole source first".
For each rebuild it also counts the git server's fetches. Medians over the runs, and the recipe's
time over that of deploykey's Dockerfile of the same shape, for the same step in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(KIT / "tests"))

from conftest import FLIT, KIT_PINS, download_wheels, flit_package  # noqa: E402
from support import engine as engines  # noqa: E402
from support.gitserver import GitServer  # noqa: E402

PUBLIC = ("requests==2.32.3",)
KIT_DEPS = (*KIT_PINS, "uv")

# The seeds' recipe (../shared/seeds, "Creating a private Python package with Git and using it in
# Docker"), with what this machine needs: no apt-get (the base has git and ssh), an ssh config that
# sends github.com to the local server (its stand-in for DNS), the wheelhouse instead of PyPI, and
# pip in a venv at ~/.local made in a layer of its own (the base's Debian Python has no pip, where
# the seeds' python:3.8 image has it built in; the final stage copies ~/.local as in the seeds).
RECIPE = """\
ARG BASE
FROM ${BASE} AS build
ARG SSH_PRIVATE_KEY
ARG GIT_PORT
ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels
RUN python3 -m venv /root/.local
RUN mkdir -p /root/.ssh/
RUN echo "${SSH_PRIVATE_KEY}" > /root/.ssh/id_rsa
RUN chmod 600 /root/.ssh/id_rsa
RUN printf 'Host github.com\\n  HostName 127.0.0.1\\n  Port %s\\n' "${GIT_PORT}" > /root/.ssh/config
RUN touch /root/.ssh/known_hosts
RUN ssh-keyscan -p "${GIT_PORT}" 127.0.0.1 >> /root/.ssh/known_hosts
COPY wheels /wheels
{copy}
RUN /root/.local/bin/pip install -r requirements.txt

FROM ${BASE}
COPY . .
RUN mkdir -p /root/.local
COPY --from=build /root/.local /root/.local
ENV PATH=/root/.local/bin:$PATH
CMD ["python3", "app.py"]
"""
RECIPES = {  # name: (Dockerfile, its text)
    "recipe": (
        "Dockerfile.recipe",
        RECIPE.replace("{copy}", "ADD ./requirements.txt requirements.txt"),
    ),
    "recipe, whole source first": (
        "Dockerfile.recipe-source",
        RECIPE.replace("{copy}", "COPY . ."),
    ),
}
OWN_SOURCE = "Dockerfile.own-source"
SOURCE_FIRST = "deploykey, source before the install"
# Each recipe against deploykey's Dockerfile of the same shape.
OURS = {"recipe": "deploykey", "recipe, whole source first": SOURCE_FIRST}
OFFLINE = ("--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels")


class Bench:
    def __init__(self, engine: engines.Engine, server: GitServer, n: int, work: Path) -> None:
        self.engine, self.server, self.work = engine, server, work
        self.key = work / "deploy_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        self.names = [f"bench_pkg{i}" for i in range(n)]
        for name in self.names:
            server.add_repo(f"acme/{name}", flit_package(name, "1.0"))
        server.grant(
            "bench", Path(f"{self.key}.pub").read_text(), [f"acme/{n}" for n in self.names]
        )
        self.wheels = work / "wheels"
        download_wheels(self.wheels, FLIT, *KIT_DEPS, *PUBLIC, cp311=True)
        self.pyz = work / "deploykey.pyz"
        subprocess.run([str(KIT / "bin" / "deploykey"), "pyz", str(self.pyz)], check=True)

    def context(self) -> Path:
        """A fresh app: examples/docker's files with the bench's requirements."""
        directory = Path(tempfile.mkdtemp(prefix="context-", dir=self.work))
        for name in ("Dockerfile", "app.py", ".dockerignore"):
            shutil.copy(KIT / "examples" / "docker" / name, directory / name)
        # The wheelhouse, copied to /wheels before the fetch as the recipe copies it before its
        # install (a real builder reaches PyPI instead: nothing to copy).
        dockerfile = directory / "Dockerfile"
        text = dockerfile.read_text()
        text = text.replace("WORKDIR /src\n", "COPY wheels /wheels\nWORKDIR /src\n", 1)
        dockerfile.write_text(text)
        # examples/docker/README.md, "An app installed from its own source": `COPY . .` between
        # the fetch and the install.
        install = "RUN --mount=type=cache,target=/var/cache/deploykey \\\n"
        assert text.count(install) == 1 and text.count("\nCOPY . .\n") == 1
        own = text.replace("\nCOPY . .\n", "\n", 1).replace(install, "COPY . .\n" + install)
        (directory / OWN_SOURCE).write_text(own)
        for dockerfile, text in RECIPES.values():
            (directory / dockerfile).write_text(text)
        shutil.copytree(self.wheels, directory / "wheels")
        shutil.copy(self.pyz, directory / "deploykey.pyz")
        (directory / "deploykey.yml").write_text(self.server.deploykey_yml())
        lines = [f"{n} @ git+ssh://git@github.com/acme/{n}.git@v1.0" for n in self.names]
        (directory / "requirements.txt").write_text("\n".join([*lines, *PUBLIC]) + "\n")
        return directory

    def build(self, context: Path, dockerfile: str, *args: str) -> float:
        began = time.perf_counter()
        result = self.engine.build(context, "bench:latest", *args, dockerfile=dockerfile)
        seconds = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit(
                f"docker build failed:\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
            )
        return seconds

    def cold_and_warm(self, dockerfile: str, *args: str) -> tuple[float, float, int]:
        """(cold build, rebuild after a change to app.py, fetches during the rebuild)."""
        self.engine.prune()
        context = self.context()
        cold = self.build(context, dockerfile, *args)
        (context / "app.py").write_text((context / "app.py").read_text() + "# changed\n")
        asked = len(self.server.log())
        warm = self.build(context, dockerfile, *args)
        return cold, warm, len(self.server.log()) - asked

    def recipe(self, name: str) -> tuple[float, float, int]:
        dockerfile = RECIPES[name][0]
        key = self.key.read_text()
        port = str(self.server.port)
        return self.cold_and_warm(
            dockerfile, "--build-arg", f"SSH_PRIVATE_KEY={key}", "--build-arg", f"GIT_PORT={port}"
        )

    def deploykey(self, name: str) -> tuple[float, float, int]:
        dockerfile = OWN_SOURCE if name == SOURCE_FIRST else "Dockerfile"
        return self.cold_and_warm(dockerfile, "--secret", f"id=deploy_key,src={self.key}", *OFFLINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="private packages (default 3)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or not engines.available():
        raise SystemExit("run as root on a machine where .ci/setup has installed docker.io")
    work = Path(tempfile.mkdtemp(prefix="deploykey-bench-docker-"))
    server = GitServer.create()
    engine = engines.start()
    try:
        engines.import_base_image(engine)
        server.start()
        bench = Bench(engine, server, args.n, work)
        names = [*RECIPES, *OURS.values()]
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
        for run in range(args.runs):
            # Each run starts with the next build in turn: the first build after the engine starts
            # or after a prune of a big cache mount tends to be slower, whichever it is.
            for name in names[run % len(names) :] + names[: run % len(names)]:
                measured = bench.recipe(name) if name in RECIPES else bench.deploykey(name)
                results[name].append(measured)
                print(
                    f"run {run + 1} {name}: cold {measured[0]:.2f} s, rebuild {measured[1]:.2f} s,"
                    f" {measured[2]} fetches in the rebuild",
                    flush=True,
                )
    finally:
        engine.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{args.n} private packages + {', '.join(PUBLIC)}; medians of {args.runs} runs")
    print("| build | cold | rebuild after an app.py change | fetches in the rebuild |")
    print("|---|---|---|---|")
    for name in names:
        cold = statistics.median(m[0] for m in results[name])
        warm = statistics.median(m[1] for m in results[name])
        fetches = max(m[2] for m in results[name])
        if name not in OURS:
            print(f"| {name} | {cold:.2f} s | {warm:.2f} s | {fetches} |")
            continue
        ours = results[OURS[name]]
        # The ratio of medians of per-run ratios: the recipe's time over deploykey's, same run.
        cold_ratio = statistics.median(
            m[0] / o[0] for m, o in zip(results[name], ours, strict=True)
        )
        warm_ratio = statistics.median(
            m[1] / o[1] for m, o in zip(results[name], ours, strict=True)
        )
        print(
            f"| {name} | {cold:.2f} s ({OURS[name]} {cold_ratio:.1f}x) | {warm:.2f} s "
            f"({OURS[name]} {warm_ratio:.1f}x) | {fetches} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
