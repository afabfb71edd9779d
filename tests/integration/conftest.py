"""Fixtures the integration tests share."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deepseek_operator.kube import client as kube
from deepseek_operator.sim.tools import repo_root


@pytest.fixture
def model_store(kube_api: Any, namespace: str) -> str:
    """The samples' model-store PVC in the test namespace, bound to one of the simulated volumes,
    and the Secret the samples that download name (the operator waits for what a spec names)."""
    samples = repo_root() / "manifests" / "samples"
    (pvc,) = [d for d in yaml.safe_load_all((samples / "model-store-pvc.yaml").read_text()) if d]
    for secret in yaml.safe_load_all((samples / "hf-token-secret.yaml").read_text()):
        if secret:
            kube.server_side_apply(kube_api, secret, "user", namespace)
    kube.server_side_apply(kube_api, pvc, "user", namespace)
    return str(pvc["metadata"]["name"])
