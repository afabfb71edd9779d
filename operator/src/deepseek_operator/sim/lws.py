"""The real LeaderWorkerSet controller (sigs.k8s.io/lws, pinned in hack/tools.versions) beside the
simulated control plane, run outside the cluster as TESTBED.md describes.

``hack/build-tools.sh`` builds ``lws-controller`` and keeps the module's CRDs
(``config/crd/bases``) and webhook manifests (``config/webhook``) beside it. Here: the CRDs are
created, the controller starts with leader election and its own certificate management off and
its webhook server on 127.0.0.1 (the sim's serving certificate, which names 127.0.0.1), and the
webhook configurations point at that address with the sim's CA, the pod webhooks limited to
LeaderWorkerSet pods as the module's ``*-patch.yaml`` files limit them. The webhooks are required:
they default the LeaderWorkerSet and label its pods, and the reconciler relies on both.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# What the module's config/webhook/*-patch.yaml add to the pod webhooks: only pods of a LeaderWorkerSet.
POD_SELECTOR = {"matchExpressions": [{"key": "leaderworkerset.sigs.k8s.io/name", "operator": "Exists"}]}
_POD_WEBHOOKS = ("mpod.kb.io", "vpod.kb.io")


@dataclass(frozen=True)
class LWSFiles:
    """What the controller is started with."""

    config: Path
    cert_dir: Path
    webhook_port: int
    health_port: int


def crds(tool_dir: Path) -> list[dict[str, Any]]:
    """The module's CustomResourceDefinitions (LeaderWorkerSet, and DisaggregatedSet which the
    controller also watches)."""
    out = []
    for path in sorted((tool_dir / "config" / "crd").glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def write_config(
    workdir: Path, serving_cert: Path, serving_key: Path, webhook_port: int, health_port: int
) -> LWSFiles:
    """The controller's configuration file and certificate folder, under ``workdir``."""
    cert_dir = workdir / "lws-certs"
    cert_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(serving_cert, cert_dir / "tls.crt")
    shutil.copyfile(serving_key, cert_dir / "tls.key")
    config = {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
    }
    path = workdir / "lws-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return LWSFiles(path, cert_dir, webhook_port, health_port)


def webhook_configurations(tool_dir: Path, webhook_port: int, ca_cert: Path) -> list[dict[str, Any]]:
    """The module's webhook configurations, pointed at the controller on 127.0.0.1 with the sim's CA."""
    bundle = base64.b64encode(ca_cert.read_bytes()).decode()
    docs = [
        d for d in yaml.safe_load_all((tool_dir / "config" / "webhook" / "manifests.yaml").read_text()) if d
    ]
    for doc in docs:
        doc["metadata"]["name"] = f"lws-{doc['metadata']['name']}"
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{webhook_port}{path}", "caBundle": bundle}
            if hook["name"] in _POD_WEBHOOKS:
                hook["objectSelector"] = POD_SELECTOR
            hook["timeoutSeconds"] = 10
    return docs


def probe_object(namespace: str = "default") -> dict[str, Any]:
    """A LeaderWorkerSet to create with dryRun: it succeeds once the webhooks answer."""
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "sim-webhook-probe", "namespace": namespace},
        "spec": {
            "leaderWorkerTemplate": {
                "size": 1,
                "workerTemplate": {"spec": {"containers": [{"name": "c", "image": "probe"}]}},
            }
        },
    }
