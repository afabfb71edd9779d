"""`sim up --with lws`: the pieces that point the real LeaderWorkerSet controller at the simulated
control plane (no cluster needed here; tests/integration/test_lws_multinode.py runs it)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from deepseek_operator.__main__ import build_parser
from deepseek_operator.errors import SimError
from deepseek_operator.sim import lws
from deepseek_operator.sim.cluster import SimCluster
from deepseek_operator.sim.tools import parse_versions, tool_path, versions_file

# The shape of the module's config/webhook/manifests.yaml (v0.9.0): service references.
MANIFESTS = """
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mutating-webhook-configuration}
webhooks:
- name: mleaderworkerset.kb.io
  clientConfig:
    service:
      name: webhook-service
      namespace: system
      path: /mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset
- name: mpod.kb.io
  clientConfig: {service: {name: webhook-service, namespace: system, path: /mutate--v1-pod}}
"""


def test_webhooks_point_at_the_local_controller_and_only_lws_pods(tmp_path: Path) -> None:
    (tmp_path / "config" / "webhook").mkdir(parents=True)
    (tmp_path / "config" / "webhook" / "manifests.yaml").write_text(MANIFESTS)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nx\n")
    (doc,) = lws.webhook_configurations(tmp_path, 9443, ca)
    lws_hook, pod_hook = doc["webhooks"]
    assert lws_hook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
        "caBundle": base64.b64encode(ca.read_bytes()).decode(),
    }
    assert "objectSelector" not in lws_hook
    assert pod_hook["objectSelector"] == lws.POD_SELECTOR  # as the module's *-patch.yaml limit it


def test_controller_config_turns_off_what_needs_a_cluster(tmp_path: Path) -> None:
    cert, key = tmp_path / "c", tmp_path / "k"
    cert.write_text("cert")
    key.write_text("key")
    files = lws.write_config(tmp_path, cert, key, 9443, 8081)
    config = yaml.safe_load(files.config.read_text())
    assert config["leaderElection"] == {"leaderElect": False}
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": str(files.cert_dir)}
    assert (files.cert_dir / "tls.crt").read_text() == "cert" and (
        files.cert_dir / "tls.key"
    ).read_text() == "key"


def test_sim_up_with_lws_and_unknown_components() -> None:
    args = build_parser().parse_args(["sim", "up", "--with", "lws"])
    assert args.with_components == ["lws"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sim", "up", "--with", "istio"])
    with pytest.raises(SimError, match="--with istio: unknown"):
        SimCluster(with_components=("istio",))


def test_lws_controller_is_pinned_and_cached_like_the_other_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = parse_versions(versions_file().read_text())
    assert versions["LWS_VERSION"] == "v0.9.0"
    monkeypatch.setenv("DSO_TOOLS_CACHE", "/nonexistent")
    monkeypatch.delenv("DSO_TOOLS_BIN", raising=False)
    with pytest.raises(
        Exception, match=r"lws-controller v0.9.0 is not built yet .*/tools/lws-v0.9.0/lws-controller"
    ):
        tool_path("lws-controller")
