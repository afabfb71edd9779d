"""The operator image (``make image``): it builds without a registry and runs read-only as a
non-root user."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from deepseek_operator import __version__
from tests.support.image import build_image, podman, run_args


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    yield build_image()


def test_image_prints_its_version_read_only_as_non_root(image: str) -> None:
    out = podman(*run_args(image, "--version", options=["--rm", "--entrypoint", "deepseek-operator"]))
    assert out.stdout.strip() == f"deepseek-operator {__version__}"

    # Not root, even when nobody asks; nothing writable but /tmp.
    probe = podman(
        *run_args(
            image,
            "-c",
            "id -u; touch /opt/x 2>/dev/null && echo opt-writable; touch /tmp/x && echo tmp-writable",
            options=["--rm", "--entrypoint", "sh"],
        )
    )
    assert probe.stdout.split() == ["65532", "tmp-writable"]


def test_image_runs_the_operator_and_ships_no_build_tools(image: str) -> None:
    (config,) = json.loads(podman("image", "inspect", image).stdout)
    assert config["Config"]["Entrypoint"] == ["deepseek-operator", "run"]
    assert config["Config"]["User"] == "65532:65532"
    # No compilers, no pip, no test extras in the image.
    probe = podman(
        *run_args(
            image,
            "-c",
            "for t in gcc cc pip pip3 pytest; do command -v $t; done; "
            'python3 -c \'import importlib.util as u; print([m for m in ("pytest", "pytriton", "pip") '
            "if u.find_spec(m)])'",
            options=["--rm", "--entrypoint", "sh"],
        ),
        check=False,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
