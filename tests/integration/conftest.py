"""Fixtures the integration tests share."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deepseek_operator.kube import client as kube
from deepseek_operator.sim.tools import repo_root


@pytest.fixture
def model_store(kube_api: Any, namespace: str) -> str:
    """The samples' model-store PVC in the test namespace, bound to one of the simulated volumes."""
    (pvc,) = [
        d
        for d in yaml.safe_load_all(
            (repo_root() / "manifests" / "samples" / "model-store-pvc.yaml").read_text()
        )
        if d
    ]
    kube.server_side_apply(kube_api, pvc, "user", namespace)
    return str(pvc["metadata"]["name"])
