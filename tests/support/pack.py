"""The REAL `pack` CLI, as users build with Cloud Native Buildpacks, against the tests' own dockerd.

.ci/pack builds github.com/buildpacks/pack (the pinned PACK_VERSION there) from the Go module
proxy. A builder is made here the way a user makes one (`pack builder create`): the lifecycle
.ci/lifecycle built, packed as the release .tgz is (lifecycle.toml at its top, one folder holding
each phase under its name), and build and run images made from the debootstrap root filesystem
the Docker tests import (engine.py), with a non-root CNB user. Facts for running it offline
against Debian's dockerd 20.10 (../shared/reference/platforms.md, "Facts checked"): Docker API
1.41 for pack and in the build image (the lifecycle's container inherits it), `--docker-host
inherit`, `--pull-policy never`, `--network host` (the git server listens on the loopback) and
`--trust-builder` with `--trust-extra-buildpacks` (else pack runs phases from the lifecycle image
it would pull from Docker Hub).
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

from support import engine as engines
from support.lifecycle import BINARIES, LIFECYCLE_VERSION

KIT = Path(__file__).resolve().parents[2]
FOUND = re.search(r"^PACK_VERSION=(\S+)$", (KIT / ".ci" / "pack").read_text(), re.M)
assert FOUND is not None
PACK_VERSION = FOUND.group(1)
PACK = Path(f"/var/cache/deploykey-tests/pack-{PACK_VERSION}/pack")
API_VERSION = "1.41"  # Debian's dockerd 20.10
BUILD_IMAGE = "deploykey-test-cnb-build:bookworm"
RUN_IMAGE = "deploykey-test-cnb-run:bookworm"
BUILDER = "deploykey-test-builder:bookworm"
CNB_UID = 1000
PHASES = ("detector", "restorer", "analyzer", "builder", "exporter", "creator", "extender")
# The API lists lifecycle v0.21.0 supports (api/apis.go: Platform 0.7-0.15, Buildpack 0.7-0.12).
LIFECYCLE_TOML = f"""[apis]
[apis.buildpack]
deprecated = []
supported = ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12"]
[apis.platform]
deprecated = []
supported = ["0.7", "0.8", "0.9", "0.10", "0.11", "0.12", "0.13", "0.14", "0.15"]

[lifecycle]
version = "{LIFECYCLE_VERSION.removeprefix("v")}"
"""
# The kit's own dependencies are unpacked into the build image's site-packages (bootstrap.py:
# what the Python has itself is used as it is), so the build runs offline.
IMAGE_DOCKERFILE = f"""FROM {engines.BASE_IMAGE}
COPY wheels /tmp/wheels
RUN for wheel in /tmp/wheels/*.whl; do \\
      python3 -m zipfile -e "$wheel" /usr/local/lib/python3.11/dist-packages/; done \\
 && rm -rf /tmp/wheels \\
 && groupadd -g {CNB_UID} cnb && useradd -u {CNB_UID} -g {CNB_UID} -m -s /bin/bash cnb
ENV CNB_USER_ID={CNB_UID} CNB_GROUP_ID={CNB_UID} DOCKER_API_VERSION={API_VERSION}
USER {CNB_UID}:{CNB_UID}
"""


def available() -> bool:
    return PACK.is_file() and (BINARIES / "lifecycle").is_file()


def pack(
    engine: engines.Engine, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PACK), *args],
        env={
            **engine.env,
            "DOCKER_API_VERSION": API_VERSION,
            "PACK_HOME": str(engine.root / "pack-home"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=1200,
    )


def lifecycle_tgz(target: Path) -> Path:
    """The lifecycle as its release archive holds it: lifecycle.toml, and lifecycle/<phase>."""
    with tarfile.open(target, "w:gz") as tar:
        data = LIFECYCLE_TOML.encode()
        info = tarfile.TarInfo("lifecycle.toml")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("lifecycle")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        tar.add(BINARIES / "lifecycle", "lifecycle/lifecycle")
        tar.add(BINARIES / "launcher", "lifecycle/launcher")
        for phase in PHASES:
            link = tarfile.TarInfo(f"lifecycle/{phase}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "lifecycle", 0o755
            tar.addfile(link)
    return target


def make_builder(engine: engines.Engine, work: Path, wheels: Path, buildpacks: Path) -> str:
    """Build and run images, then `pack builder create` with the test pip buildpack in its
    order (deploykey and the scan step come with `pack build --buildpack`, as users add them)."""
    context = work / "image"
    context.mkdir()
    (context / "Dockerfile").write_text(IMAGE_DOCKERFILE)
    subprocess.run(["cp", "-r", str(wheels), str(context / "wheels")], check=True)
    for tag in (BUILD_IMAGE, RUN_IMAGE):
        built = engine.build(context, tag)
        assert built.returncode == 0, built.stdout + built.stderr
    tgz = lifecycle_tgz(work / "lifecycle.tgz")
    pip = buildpacks / "pip"
    (work / "builder.toml").write_text(
        f"""[[buildpacks]]
uri = "{pip}"

[[order]]
[[order.group]]
id = "test/pip"
version = "0.0.1"

[build]
image = "{BUILD_IMAGE}"

[run]
[[run.images]]
image = "{RUN_IMAGE}"

[lifecycle]
uri = "{tgz}"
"""
    )
    made = pack(
        engine,
        *("builder", "create", BUILDER, "--config", str(work / "builder.toml")),
        *("--pull-policy", "never"),
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return BUILDER
