"""The real Docker Engine with BuildKit, as users build: Debian's `docker.io` (Engine 20.10).

The tests start their own dockerd, as root, offline and without a registry (issue 16, and
../shared/reference/platforms.md "Docker / OCI builds"): a private data root and socket, no
iptables, no bridge, overlay2; every build and run then uses the host's network (`--network
host`: the local git server listens on the loopback). The client is Debian's own, by its full
path, with DOCKER_BUILDKIT=1 (Engine 20.10 still defaults to the legacy builder, and another
client on PATH may lack buildx). The base image is the debootstrap root filesystem the buildah
tests use, brought in with `docker import`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import images

DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
BASE_IMAGE = "deploykey-test-base:bookworm"


def available() -> bool:
    return Path(DOCKER).is_file() and Path(DOCKERD).is_file()


@dataclass
class Engine:
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "DOCKER_HOST": f"unix://{self.root / 'docker.sock'}",
            "DOCKER_CONFIG": str(self.root / "client"),
            "DOCKER_BUILDKIT": "1",
        }

    def docker(
        self, *args: str, check: bool = True, timeout: int = 900, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [DOCKER, *args],
            capture_output=True,
            text=input is None,
            env=self.env,
            timeout=timeout,
            input=input,
        )
        if isinstance(result.stdout, bytes):
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def build(
        self,
        context: Path,
        tag: str,
        *args: str,
        dockerfile: str = "Dockerfile",
        base: str = BASE_IMAGE,
    ) -> subprocess.CompletedProcess[str]:
        """`docker build` as the examples' comments say, plus the host network and the base."""
        return self.docker(
            "build",
            "--progress",
            "plain",
            "--network",
            "host",
            "--build-arg",
            f"BASE={base}",
            "-f",
            str(context / dockerfile),
            "-t",
            tag,
            *args,
            str(context),
            check=False,
        )

    def run(self, tag: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.docker("run", "--rm", "--network", "none", tag, *command, check=False)

    def save(self, tag: str, archive: Path) -> Path:
        self.docker("save", "-o", str(archive), tag)
        return archive

    def history(self, tag: str) -> list[str]:
        listed = self.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", tag)
        return listed.stdout.splitlines()

    def diff_ids(self, tag: str) -> list[str]:
        inspected = self.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag)
        return list(json.loads(inspected.stdout))

    def remove(self, *tags: str) -> None:
        if tags:
            self.docker("image", "rm", "--force", *tags, check=False)

    def prune(self) -> None:
        """Forget every cached step and cache mount, as on a builder that never built anything."""
        self.docker("builder", "prune", "--all", "--force")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # overlay2 leaves root-owned mounts only while dockerd runs; the rest is plain files.
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Engine:
    root = Path(tempfile.mkdtemp(prefix="deploykey-engine-"))
    (root / "home").mkdir()
    (root / "client").mkdir()
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [
            DOCKERD,
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{root / 'docker.sock'}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver",
            "overlay2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(root, process)
    deadline = time.monotonic() + 60
    while engine.docker("version", check=False, timeout=30).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            engine.stop()
            raise AssertionError(f"dockerd did not start:\n{(root / 'dockerd.log').read_text()}")
        time.sleep(0.2)
    return engine


def import_base_image(engine: Engine) -> str:
    """The debootstrap root filesystem (made once per machine by images.py) as an image."""
    rootfs = images.ensure_rootfs()
    archive = subprocess.run(
        ["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True
    ).stdout
    engine.docker(
        "import",
        "--change",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--change",
        'CMD ["/bin/bash"]',
        "-",
        BASE_IMAGE,
        input=archive,
    )
    return BASE_IMAGE


def everything_in(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) for every file of a `docker save` archive (manifest, config, each layer's
    legacy json) and every file of every layer; read here, independently of deploykey's scanner."""
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member)
            assert data is not None
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                try:
                    with tarfile.open(fileobj=data, mode="r|*") as files:
                        for inner in files:
                            if inner.isfile():
                                content = files.extractfile(inner)
                                assert content is not None
                                yield f"{member.name}:{inner.name}", content.read()
                    continue
                except tarfile.ReadError:
                    data = outer.extractfile(member)
                    assert data is not None
            yield member.name, data.read()
