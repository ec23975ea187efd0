"""The REAL Cloud Native Buildpacks lifecycle, run on plain directories the way a platform does.

.ci/lifecycle builds buildpacks/lifecycle (the pinned LIFECYCLE_VERSION there) and its launcher.
Each phase is that one binary under the phase's name: analyzer, detector, restorer, builder,
exporter, run as a non-root user (the lifecycle refuses root) with Platform API 0.12, with the
image as an OCI layout on disk (`-layout`: no registry, no daemon) and the cache as a directory
(`-cache-dir`). The run image is made here: a minimal OCI image (one layer with /etc/os-release),
written by hand into the layout directory where the lifecycle looks for it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tomllib

from support.cnb import IMAGE_PATH, cnb_user

KIT = Path(__file__).resolve().parents[2]
VERSION = re.search(r"^LIFECYCLE_VERSION=(\S+)$", (KIT / ".ci" / "lifecycle").read_text(), re.M)
assert VERSION is not None
LIFECYCLE_VERSION = VERSION.group(1)
BINARIES = Path(f"/var/cache/deploykey-tests/lifecycle-{LIFECYCLE_VERSION}")
PHASES = ("analyzer", "detector", "restorer", "builder", "exporter")
PLATFORM_API = "0.12"
# References map to paths under the layout dir: <registry>/<repository>/<tag> (imgutil's
# layout.ParseRefToPath); a registry name needs a dot, or it is taken for Docker Hub's.
RUN_IMAGE = "registry.test/deploykey/run:latest"
APP_IMAGE = "registry.test/deploykey/app:latest"


def _blob(blobs: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_run_image(directory: Path) -> None:
    """A minimal run image as an OCI image layout: one layer holding /etc/os-release."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in ("etc/", "tmp/"):
            info = tarfile.TarInfo(name.rstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        release = b'ID=debian\nVERSION_ID="12"\n'
        info = tarfile.TarInfo("etc/os-release")
        info.size = len(release)
        tar.addfile(info, io.BytesIO(release))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [f"PATH={IMAGE_PATH}"], "User": str(cnb_user().pw_uid)},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(raw.getvalue()).hexdigest()}"],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(blobs, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(blobs, layer)}
        ],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(blobs, json.dumps(manifest).encode()),
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


@dataclass
class RealLifecycle:
    """One build's directories, owned by the build user, under a 0755 temp dir."""

    root: Path

    @classmethod
    def create(cls) -> RealLifecycle:
        for phase in ("lifecycle", "launcher"):
            if not (BINARIES / phase).is_file():
                raise RuntimeError(f"{BINARIES / phase} is missing: run .ci/lifecycle")
        root = Path(tempfile.mkdtemp(prefix="deploykey-lifecycle-", dir="/tmp"))
        root.chmod(0o755)
        life = cls(root)
        for name in ("app", "layers", "platform/env", "buildpacks", "cache", "layout", "home"):
            (root / name).mkdir(parents=True)
        for phase in PHASES:
            (root / phase).symlink_to(BINARIES / "lifecycle")
        write_run_image(life.layout / "registry.test" / "deploykey" / "run" / "latest")
        return life

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def layers(self) -> Path:
        return self.root / "layers"

    @property
    def platform(self) -> Path:
        return self.root / "platform"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def layout(self) -> Path:
        return self.root / "layout"

    @property
    def image(self) -> Path:
        return self.layout / "registry.test" / "deploykey" / "app" / "latest"

    def add_buildpack(self, path: Path) -> tuple[str, str]:
        """Install a buildpack directory where the lifecycle looks: buildpacks/<id>/<version>."""
        info = tomllib.loads((path / "buildpack.toml").read_text())["buildpack"]
        target = self.root / "buildpacks" / info["id"].replace("/", "_") / info["version"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(path, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        return info["id"], info["version"]

    def order(self, *buildpacks: tuple[str, str]) -> None:
        """One group, every buildpack required: what `pack --pre-buildpack/--post-buildpack` and
        project.toml's io.buildpacks.pre/post groups make of the builder's order."""
        lines = ["[[order]]"]
        for bp_id, version in buildpacks:
            lines += ["[[order.group]]", f'id = "{bp_id}"', f'version = "{version}"']
        (self.root / "order.toml").write_text("\n".join(lines) + "\n")

    def set_env(self, **values: str) -> None:
        for name, value in values.items():
            (self.platform / "env" / name).write_text(value)

    def set_binding(self, name: str, files: dict[str, str]) -> None:
        directory = self.platform / "bindings" / name
        directory.mkdir(parents=True)
        for entry, value in files.items():
            (directory / entry).write_text(value)

    def phase(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one phase as the build user, with the platform's own environment only."""
        user = cnb_user()
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(self.root)], check=True)
        ids = ("-uid", str(user.pw_uid), "-gid", str(user.pw_gid))
        common = {
            "analyzer": ["-layers", "layers", "-run-image", RUN_IMAGE, *ids],
            "detector": [
                *("-app", "app", "-buildpacks", "buildpacks", "-order", "order.toml"),
                *("-layers", "layers", "-platform", "platform"),
            ],
            "restorer": ["-layers", "layers", "-cache-dir", "cache", *ids],
            "builder": [
                *("-app", "app", "-buildpacks", "buildpacks", "-layers", "layers"),
                *("-platform", "platform"),
            ],
            "exporter": [
                *("-app", "app", "-layers", "layers", "-cache-dir", "cache"),
                *("-launcher", str(BINARIES / "launcher"), *ids),
            ],
        }[name]
        target = [APP_IMAGE] if name in ("analyzer", "exporter") else []
        env = {
            "PATH": IMAGE_PATH,
            "HOME": str(self.root / "home"),
            "CNB_PLATFORM_API": PLATFORM_API,
            "CNB_USE_LAYOUT": "true",
            "CNB_EXPERIMENTAL_MODE": "silent",  # the layout export is an experimental feature
            "CNB_LAYOUT_DIR": str(self.layout),
            "LANG": "C.UTF-8",
        }
        argv = [str(self.root / name), *common, "-log-level", "debug", *args, *target]
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                *argv,
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
        )

    def build(self) -> list[subprocess.CompletedProcess[str]]:
        """analyzer, detector, restorer, builder, exporter; stops at the first that fails."""
        done = []
        for name in PHASES:
            result = self.phase(name)
            done.append(result)
            if result.returncode != 0:
                break
        return done

    def rebuild(self) -> None:
        """The next build of the same app: fresh app and layers dirs (a new checkout), the same
        cache and layout (the previous image); platform files stay."""
        app = self.app / "requirements.txt", self.app / "deploykey.yml"
        kept = {path.name: path.read_bytes() for path in app if path.exists()}
        for name in ("app", "layers"):
            shutil.rmtree(self.root / name)
            (self.root / name).mkdir()
        for name, data in kept.items():
            (self.app / name).write_bytes(data)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def output_of(results: list[subprocess.CompletedProcess[str]]) -> str:
    return "".join(r.stdout + r.stderr for r in results)


def layout_archive(image: Path, target: Path) -> Path:
    """The exported OCI layout as an OCI archive (a tar of the layout), for `scan-image`."""
    with tarfile.open(target, "w") as tar:
        for path in sorted(image.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(image)), recursive=False)
    return target


def image_files(image: Path) -> dict[str, bytes]:
    """Every file of every layer of the exported image, by path: the tests' own reading."""
    index = json.loads((image / "index.json").read_text())
    blobs = image / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        data = (blobs / layer["digest"].split(":")[1]).read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[member.name] = extracted.read()
    files["<config>"] = (blobs / manifest["config"]["digest"].split(":")[1]).read_bytes()
    return files
