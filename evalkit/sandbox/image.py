"""The sandbox image: its recipe, its tag, how to build it and how to tell whether the engine is there."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from evalkit.sandbox.program import SandboxError

IMAGE_ENV = "EVALKIT_SANDBOX_IMAGE"
IMAGE_REPO = "evalkit-sandbox"


def recipe_dir() -> Path:
    """The top-level `sandbox/` folder of the checkout (image recipe and in-container runner)."""
    here = Path(__file__).resolve().parents[2] / "sandbox"
    if not (here / "runner.py").is_file():
        raise SandboxError(
            f"the sandbox recipe folder {here} is missing; evalkit runs from a source checkout "
            "(pip install -e .)"
        )
    return here


def runner_source() -> str:
    return (recipe_dir() / "runner.py").read_text()


def recipe_hash() -> str:
    """Hash of what goes into the image; the runner is sent at container start and is not part of it."""
    h = hashlib.sha256()
    for name in ("packages.txt", "build-offline.sh", "Dockerfile", "warm/go_cache_test.go"):
        h.update(name.encode() + b"\0" + (recipe_dir() / name).read_bytes())
    return h.hexdigest()[:12]


def image_tag() -> str:
    return os.environ.get(IMAGE_ENV) or f"{IMAGE_REPO}:{recipe_hash()}"


ENGINE_HELP = (
    "Start one with `sudo dockerd &` (Debian: `apt-get install docker.io`), or `sudo systemctl start docker`, "
    "and make sure your user may use it (`docker info` must work)."
)


def check_engine() -> None:
    """Raise SandboxError unless the docker CLI is installed (workers run through it) and an engine answers."""
    if shutil.which("docker") is None:
        raise SandboxError(
            f"the `docker` command is not installed, so generated code cannot be sandboxed. {ENGINE_HELP}"
        )
    import docker

    try:
        client = docker.from_env(timeout=20)
        try:
            client.version()
        finally:
            client.close()
    except docker.errors.DockerException as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else "no answer"
        raise SandboxError(f"no Docker engine is reachable ({reason}). {ENGINE_HELP}") from None


def image_exists(tag: str) -> bool:
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def require_image(tag: str) -> None:
    check_engine()
    if not image_exists(tag):
        raise SandboxError(
            f"the sandbox image {tag} is not built. Build it with `evalkit sandbox build` "
            "(offline, from Debian packages, about 2 minutes; needs root and debootstrap), "
            "or `evalkit sandbox build --dockerfile` where a registry is reachable."
        )


def build_image(tag: str | None = None, use_dockerfile: bool = False, mirror: str | None = None,
                force: bool = False) -> str:
    """Build the image unless one from the same recipe exists; return its tag."""
    tag = tag or image_tag()
    check_engine()
    if image_exists(tag) and not force:
        return tag
    recipe = recipe_dir()
    if use_dockerfile:
        cmd = ["docker", "build", "-t", tag, str(recipe)]
    else:
        if shutil.which("debootstrap") is None:
            raise SandboxError("offline builds need debootstrap: `apt-get install debootstrap` (as root)")
        if os.geteuid() != 0:
            raise SandboxError("offline builds run debootstrap and chroot, which need root: run as root or with sudo")
        cmd = ["bash", str(recipe / "build-offline.sh"), tag] + ([mirror] if mirror else [])
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SandboxError(f"building the sandbox image failed (exit {proc.returncode}); see the output above")
    return tag
