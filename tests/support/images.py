"""Real image builds for the tests: buildah as root, daemonless, from a base image made offline.

The base image is Debian bookworm made with debootstrap (python3, python3-venv, git, openssh-client,
ca-certificates) and imported with `buildah from scratch` / `copy` / `commit` as
localhost/deploykey-test-base:bookworm; it is made once per machine (about 40 s) and reused.
Builds run with `--layers --isolation chroot --storage-driver vfs`: one layer per instruction as
`docker build` makes them, no daemon, no overlay support, and the host's loopback network (the
local git server).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

BASE_IMAGE = "localhost/deploykey-test-base:bookworm"
CACHE = Path("/var/cache/deploykey-tests")
PACKAGES = "python3,python3-venv,git,openssh-client,ca-certificates"
MIRROR = "http://deb.debian.org/debian"
STORAGE = ["--storage-driver", "vfs"]


def buildah(*args: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORAGE_DRIVER": "vfs", "BUILDAH_ISOLATION": "chroot"}
    result = subprocess.run(
        ["buildah", *STORAGE, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def ensure_rootfs() -> Path:
    """Debian bookworm with Python, git and ssh, made with debootstrap once per machine (~40 s)."""
    rootfs = CACHE / "rootfs-bookworm"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = CACHE / "rootfs-bookworm.partial"
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                "bookworm",
                str(partial),
                MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        partial.rename(rootfs)
    return rootfs


def ensure_base_image() -> str:
    if buildah("images", "-q", BASE_IMAGE, check=False).stdout.strip():
        return BASE_IMAGE
    rootfs = ensure_rootfs()
    container = buildah("from", "scratch").stdout.strip()
    try:
        buildah("copy", "--quiet", container, str(rootfs), "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd",
            "/bin/bash",
            container,
        )
        buildah("commit", "--quiet", container, BASE_IMAGE)
    finally:
        buildah("rm", container, check=False)
    return BASE_IMAGE


def build(
    context: Path, tag: str, *args: str, dockerfile: str = "Dockerfile"
) -> subprocess.CompletedProcess[str]:
    return buildah(
        "bud",
        # One layer per instruction, as `docker build` makes them (buildah squashes by default).
        "--layers",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "-f",
        str(context / dockerfile),
        "-t",
        tag,
        *args,
        str(context),
        check=False,
    )


def export(tag: str, archive: Path) -> Path:
    buildah("push", tag, f"oci-archive:{archive}")
    return archive


def run(tag: str, *command: str) -> subprocess.CompletedProcess[str]:
    container = buildah("from", tag).stdout.strip()
    try:
        return buildah("run", "--isolation", "chroot", container, "--", *command, check=False)
    finally:
        buildah("rm", container, check=False)


def remove(tag: str) -> None:
    buildah("rmi", "--force", tag, check=False)


def everything_in(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) for the config and every file of every layer of an OCI archive; read here,
    independently of deploykey's image scanner."""
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        for entry in index["manifests"]:
            manifest = json.load(outer.extractfile("blobs/sha256/" + entry["digest"].split(":")[1]))  # type: ignore[arg-type]
            config = outer.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":")[1])
            assert config is not None
            yield "config", config.read()
            for layer in manifest["layers"]:
                blob = outer.extractfile("blobs/sha256/" + layer["digest"].split(":")[1])
                with tarfile.open(fileobj=blob, mode="r|*") as files:
                    for member in files:
                        if member.isfile():
                            data = files.extractfile(member)
                            assert data is not None
                            yield f"{layer['digest']}:{member.name}", data.read()
