"""A Cloud Native Buildpacks lifecycle EMULATION for the tests: detect, build and export, by the spec.

No lifecycle or `pack` binary can be installed on these machines, so this harness follows the
Buildpack API 0.10 spec (and ../shared/reference/platforms.md) to the letter for what deploykey
touches, and runs real buildpacks with it:
- every buildpack runs as a non-root user (the lifecycle refuses root), in the app dir;
- detect gets CNB_PLATFORM_DIR, CNB_BUILD_PLAN_PATH, CNB_BUILDPACK_DIR, CNB_TARGET_*; exit 0 is
  pass, 100 fail, anything else an error;
- build gets CNB_LAYERS_DIR (its own), CNB_PLATFORM_DIR, CNB_BP_PLAN_PATH, CNB_BUILDPACK_DIR,
  CNB_TARGET_*;
- `clear-env = true`: platform env vars (`<platform>/env/NAME`) are NOT in the buildpack's
  environment; `false`: they are, and win over values from buildpacks;
- a later buildpack's build gets, from each earlier buildpack's `build = true` layers, `bin` on
  PATH, `lib` on LD_LIBRARY_PATH, and the `env/` and `env.build/` files (NAME, .override, .default,
  .append, .prepend with .delim); `env.launch/` is for the launched app only;
- a layer's `<name>.toml` holds a `[types]` table; top-level build/launch/cache flags are an error;
- export: the whole app dir and the launch layers go into the image; the cache layers into the cache;
  build-only layers go nowhere.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

CNB_USER = "cnb"
# A build image's PATH; /usr/bin/python3 there has none of the kit's dependencies.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the lifecycle passes from the platform's own environment (proxies; service bindings).
FROM_PLATFORM = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SERVICE_BINDING_ROOT",
)
APIS = ("0.10", "0.11", "0.12")


class SpecError(AssertionError):
    """A buildpack did something the spec forbids."""


def cnb_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(CNB_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", CNB_USER], check=True)
        return pwd.getpwnam(CNB_USER)


@dataclass(frozen=True)
class Buildpack:
    path: Path
    id: str
    clear_env: bool

    @classmethod
    def load(cls, path: Path) -> Buildpack:
        data = tomllib.loads((path / "buildpack.toml").read_text())
        if data.get("api") not in APIS:
            raise SpecError(f"{path}: api {data.get('api')!r} is not one of {APIS}")
        info = data["buildpack"]
        if not any(target.get("os") == "linux" for target in data.get("targets", [])):
            raise SpecError(f"{path}: no [[targets]] os = linux")
        return cls(path, info["id"], bool(info.get("clear-env", False)))

    @property
    def escaped(self) -> str:
        return self.id.replace("/", "_")


@dataclass
class Layer:
    path: Path
    types: dict[str, bool]


def apply_env_dir(env: dict[str, str], directory: Path) -> None:
    """The spec's environment modification rules for one env/ or env.build/ directory."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".delim"))
    for file in files:
        name, _, action = file.name.partition(".")
        value = file.read_text()
        delim_file = directory / f"{name}.delim"
        delim = delim_file.read_text() if delim_file.exists() else ""
        if action in ("", "override"):
            env[name] = value
        elif action == "default":
            env.setdefault(name, value)
        elif action == "append":
            env[name] = env[name] + delim + value if env.get(name) else value
        elif action == "prepend":
            env[name] = value + delim + env[name] if env.get(name) else value
        else:
            raise SpecError(f"{file}: unknown modification {action!r}")


@dataclass
class Lifecycle:
    root: Path
    platform_env: dict[str, str]
    bindings: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str = IMAGE_PATH
    host_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        app: Path,
        buildpacks: list[Path],
        platform_env: dict[str, str],
        bindings: dict[str, dict[str, str]] | None = None,
        path: str = IMAGE_PATH,
        host_env: dict[str, str] | None = None,
    ) -> tuple[Lifecycle, list[Buildpack]]:
        user = cnb_user()
        root = Path(tempfile.mkdtemp(prefix="deploykey-cnb-", dir="/tmp"))
        root.chmod(0o755)
        life = cls(root, platform_env, bindings or {}, path, host_env or {})
        shutil.copytree(app, life.workspace)
        for name in ("layers", "home", "plans"):
            (root / name).mkdir()
        (root / "platform" / "env").mkdir(parents=True)
        for name, value in platform_env.items():
            (root / "platform" / "env" / name).write_text(value)
        for binding, entries in (bindings or {}).items():
            (root / "platform" / "bindings" / binding).mkdir(parents=True)
            for entry, value in entries.items():
                (root / "platform" / "bindings" / binding / entry).write_text(value)
        installed = []
        for source in buildpacks:
            buildpack = Buildpack.load(source)
            target = root / "buildpacks" / buildpack.escaped
            shutil.copytree(
                source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
            installed.append(Buildpack(target, buildpack.id, buildpack.clear_env))
        for path in [root, *root.rglob("*")]:
            if (
                path.parent.name == "buildpacks"
                or "buildpacks" in path.parts
                or "platform" in path.parts
            ):
                continue
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        return life, installed

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def platform(self) -> Path:
        return self.root / "platform"

    def layers_dir(self, buildpack: Buildpack) -> Path:
        return self.root / "layers" / buildpack.escaped

    def _base_env(self, buildpack: Buildpack) -> dict[str, str]:
        env = {
            "PATH": self.path,
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "CNB_PLATFORM_DIR": str(self.platform),
            "CNB_BUILDPACK_DIR": str(buildpack.path),
            "CNB_TARGET_OS": "linux",
            "CNB_TARGET_ARCH": "amd64",
            "CNB_TARGET_DISTRO_NAME": "debian",
            "CNB_TARGET_DISTRO_VERSION": "12",
        }
        env.update({name: value for name, value in self.host_env.items() if name in FROM_PLATFORM})
        return env

    def _run(self, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        user = cnb_user()
        return subprocess.run(
            argv,
            cwd=self.workspace,
            env=env,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=600,
        )

    def detect(self, group: list[Buildpack]) -> list[subprocess.CompletedProcess[str]]:
        results = []
        for buildpack in group:
            plan = self.root / "plans" / f"{buildpack.escaped}.detect.toml"
            plan.touch()
            os.chown(plan, cnb_user().pw_uid, cnb_user().pw_gid)
            env = self._base_env(buildpack)
            env["CNB_BUILD_PLAN_PATH"] = str(plan)
            if not buildpack.clear_env:
                env.update(self.platform_env)
            result = self._run([str(buildpack.path / "bin" / "detect")], env)
            if result.returncode not in (0, 100):
                raise SpecError(
                    f"{buildpack.id} detect errored ({result.returncode}): {result.stderr}"
                )
            results.append(result)
        return results

    def build_env(self, buildpack: Buildpack, earlier: list[Buildpack]) -> dict[str, str]:
        env = self._base_env(buildpack)
        for previous in earlier:
            for layer in self.layers(previous):
                if not layer.types.get("build"):
                    continue
                if (layer.path / "bin").is_dir():
                    env["PATH"] = f"{layer.path / 'bin'}:{env['PATH']}"
                if (layer.path / "lib").is_dir():
                    for name in ("LD_LIBRARY_PATH", "LIBRARY_PATH"):
                        env[name] = f"{layer.path / 'lib'}" + (
                            f":{env[name]}" if env.get(name) else ""
                        )
                for sub in ("env", "env.build"):
                    if (layer.path / sub).is_dir():
                        apply_env_dir(env, layer.path / sub)
        if not buildpack.clear_env:
            env.update(self.platform_env)  # the user's values win
        return env

    def build(self, group: list[Buildpack]) -> list[subprocess.CompletedProcess[str]]:
        results = []
        user = cnb_user()
        for index, buildpack in enumerate(group):
            layers = self.layers_dir(buildpack)
            layers.mkdir(exist_ok=True)
            os.chown(layers, user.pw_uid, user.pw_gid)
            plan = self.root / "plans" / f"{buildpack.escaped}.build.toml"
            plan.write_text("[[entries]]\n")
            env = self.build_env(buildpack, group[:index])
            env["CNB_LAYERS_DIR"] = str(layers)
            env["CNB_BP_PLAN_PATH"] = str(plan)
            result = self._run([str(buildpack.path / "bin" / "build")], env)
            results.append(result)
            if result.returncode != 0:
                break
            self.layers(buildpack)  # validates every layer's toml
        return results

    def layers(self, buildpack: Buildpack) -> list[Layer]:
        found = []
        directory = self.layers_dir(buildpack)
        for toml in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            if toml.name in ("launch.toml", "build.toml", "store.toml"):
                continue
            data = tomllib.loads(toml.read_text())
            flat = sorted(set(data) & {"build", "launch", "cache"})
            if flat:
                raise SpecError(f"{toml}: top-level {flat} flags are an error; use a [types] table")
            types = data.get("types", {})
            if not all(isinstance(value, bool) for value in types.values()):
                raise SpecError(f"{toml}: [types] values must be booleans")
            found.append(Layer(toml.with_suffix(""), types))
        return found

    def export(self, group: list[Buildpack]) -> tuple[Path, Path]:
        """What the lifecycle exports: the image (app dir, launch layers) and the cache."""
        image, cache = self.root / "export" / "image", self.root / "export" / "cache"
        shutil.copytree(self.workspace, image / "workspace", symlinks=True)
        cache.mkdir(parents=True)
        for buildpack in group:
            for layer in self.layers(buildpack):
                for flag, target in (("launch", image / "layers"), ("cache", cache)):
                    if layer.types.get(flag) and layer.path.is_dir():
                        destination = target / buildpack.escaped / layer.path.name
                        shutil.copytree(layer.path, destination, symlinks=True)
                        shutil.copy2(
                            layer.path.with_suffix(".toml"), destination.with_suffix(".toml")
                        )
        return image, cache

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
