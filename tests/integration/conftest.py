"""Fixtures the integration tests share."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
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


@pytest.fixture
def new_namespace(kube_api: Any) -> Iterator[Callable[[], str]]:
    """Makes fresh namespaces; each is deleted after the test, whatever it left running there
    (a serving Deployment holds simulated GPUs that later tests place on)."""
    from kubernetes import client  # noqa: PLC0415

    core = client.CoreV1Api(kube_api)
    made: list[str] = []

    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        core.create_namespace({"metadata": {"name": name, "labels": {"dso-test": "true"}}})
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except client.exceptions.ApiException as e:
            if e.status != 404:
                raise
