"""The four images `make images` built (no cluster needed): each runs as UID 10001, holds the
bytecode of the interpreter flags its process runs under for every module it could import (the
root filesystem is read-only in the pods, so nothing is compiled at run time), and no compiler or
build tool."""

import subprocess
from pathlib import Path

import pytest

from pods.cluster import local_images, render

pytestmark = pytest.mark.pods
BUILD_TOOLS = ("gcc", "cc", "c++", "make", "pip", "pip3", "uv", "git")
# every .py under the roots without its .pyc (opt-1 under python -O): count and the first few
MISSING_BYTECODE = """
import os, sys
tag = "opt-1." if sys.flags.optimize else ""
missing = [os.path.join(d, f) for root in sys.argv[1:] for d, _, files in os.walk(root) for f in files
           if f.endswith(".py") and not os.path.exists(os.path.join(d, "__pycache__", f"{f[:-3]}.cpython-311.{tag}pyc"))]
print(len(missing), *missing[:5])
"""


def project_images() -> list[str]:
    """The images built here for the project's images the dev overlay names."""
    available = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], check=True,
                               capture_output=True, text=True).stdout.split()
    return sorted(set(local_images(render("dev"), available)[0].values()))


def test_each_image_runs_as_10001_with_its_bytecode_and_no_build_tool():
    images = project_images()  # here, not at collection: `make test` collects this file without podman
    assert len(images) == 4
    for image in images:
        check(image)


def check(image: str) -> None:
    script = ("id -u; for tool in " + " ".join(BUILD_TOOLS) + "; do command -v $tool; done; echo ---; "
              "python3 $([ -n \"$PYTHONOPTIMIZE\" ] && echo -O) -c \"$0\" /opt/venv/lib/python3.11/site-packages /app /usr/lib/python3.11")
    result = subprocess.run(["podman", "run", "--rm", "--read-only", "--entrypoint", "sh", image, "-c", script,
                             MISSING_BYTECODE], capture_output=True, text=True, timeout=300, check=False)
    uid, *tools = result.stdout.split("---")[0].split()
    assert uid == "10001" and tools == [], (image, result.stdout, result.stderr)
    missing = result.stdout.split("---")[1].split()
    assert missing[0] == "0", (image, missing[:6])


def test_the_bytecode_check_can_fail():
    result = subprocess.run(["python3", "-O", "-c", MISSING_BYTECODE, str(Path(__file__).parent)],
                            capture_output=True, text=True, check=False)
    assert int(result.stdout.split()[0]) > 0  # the tests' own folder has no opt-1 bytecode
