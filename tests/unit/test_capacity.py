"""The GPU inventory kept by the informers (reconcile/capacity.py): counts as pods come and go,
and claims that make placements made in the same second see each other."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from deepseek_operator.api.spec import parse_spec
from deepseek_operator.planning.inventory import build_inventory
from deepseek_operator.planning.placement import Refusal
from deepseek_operator.planning.types import NodeInfo
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile.capacity import CLAIM_SECONDS, Capacity, Claim, claim_for
from tests.support.world import gpu_nodes, sample

pytestmark = pytest.mark.unit

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


def _pod(
    name: str,
    node: str | None,
    gpus: int,
    owner: tuple[str, str] | None = None,
    revision: str = "r1",
    phase: str = "Running",
) -> dict[str, Any]:
    labels = {}
    if owner:
        labels = {
            "app.kubernetes.io/managed-by": "deepseek-operator",
            "serving.deepseek.ai/deployment": owner[1],
            "serving.deepseek.ai/revision": revision,
        }
    spec: dict[str, Any] = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": name, "namespace": owner[0] if owner else "other", "labels": labels},
        "spec": spec,
        "status": {"phase": phase},
    }


def _capacity(spec: str = "h100:2x8,a100-80gb:1x4") -> Capacity:
    cap = Capacity()
    for node in gpu_nodes(spec):
        cap.node_changed("ADDED", node)
    return cap


def _free(inventory: list[NodeInfo]) -> dict[str, int]:
    return {n.name: n.gpus_free for n in inventory}


def _free_by_product(inventory: list[NodeInfo]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in inventory:
        out[str(n.gpu_product)] = out.get(str(n.gpu_product), 0) + n.gpus_free
    return out


def test_pods_take_and_give_back_gpus_as_they_bind_finish_and_go() -> None:
    cap = _capacity()
    assert _free(cap.inventory(None, 0)) == {"gpu-a100-80gb-0": 4, "gpu-h100-0": 8, "gpu-h100-1": 8}
    cap.pod_changed("ADDED", _pod("p", None, 3))  # pending: holds nothing yet
    assert _free(cap.inventory(None, 0))["gpu-h100-0"] == 8
    cap.pod_changed("MODIFIED", _pod("p", "gpu-h100-0", 3))  # bound
    assert _free(cap.inventory(None, 0))["gpu-h100-0"] == 5
    cap.pod_changed("MODIFIED", _pod("p", "gpu-h100-0", 3, phase="Succeeded"))
    assert _free(cap.inventory(None, 0))["gpu-h100-0"] == 8
    cap.pod_changed("MODIFIED", _pod("p", "gpu-h100-0", 3))
    cap.pod_changed("DELETED", _pod("p", "gpu-h100-0", 3))
    assert _free(cap.inventory(None, 0))["gpu-h100-0"] == 8


def test_a_resources_own_pods_are_left_out_of_its_inventory_only() -> None:
    cap = _capacity()
    cap.pod_changed("ADDED", _pod("a", "gpu-h100-0", 8, owner=("llm", "r1")))
    cap.pod_changed("ADDED", _pod("b", "gpu-h100-1", 8, owner=("other-ns", "r1")))
    assert _free(cap.inventory(("llm", "r1"), 0))["gpu-h100-0"] == 8
    assert _free(cap.inventory(("llm", "r1"), 0))["gpu-h100-1"] == 0  # a namesake elsewhere
    assert _free(cap.inventory(None, 0))["gpu-h100-0"] == 0


def test_a_node_that_goes_away_or_loses_its_gpus_leaves_the_inventory() -> None:
    cap = _capacity()
    (a100,) = [n for n in gpu_nodes("h100:2x8,a100-80gb:1x4") if "a100" in n["metadata"]["name"]]
    cap.node_changed("DELETED", a100)
    assert "gpu-a100-80gb-0" not in _free(cap.inventory(None, 0))
    a100["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    cap.node_changed("ADDED", a100)
    assert "gpu-a100-80gb-0" not in _free(cap.inventory(None, 0))


_pods = hs.lists(
    hs.tuples(
        hs.sampled_from(["gpu-h100-0", "gpu-h100-1", "gpu-a100-80gb-0", None]),
        hs.integers(0, 4),
        hs.sampled_from([None, ("llm", "r1"), ("llm", "r2"), ("x", "r1")]),
        hs.sampled_from(["Running", "Pending", "Succeeded", "Failed"]),
    ),
    max_size=12,
)


@given(pods=_pods, exclude=hs.sampled_from([None, ("llm", "r1"), ("x", "r1")]))
@settings(max_examples=200, deadline=None)
def test_without_claims_it_is_the_inventory_built_from_scratch(
    pods: list[tuple[str | None, int, tuple[str, str] | None, str]], exclude: tuple[str, str] | None
) -> None:
    """Fed pod by pod (with updates and deletions on the way), it answers as build_inventory over
    the final pods does."""
    nodes = gpu_nodes("h100:2x8,a100-80gb:1x4")
    cap = Capacity()
    for node in nodes:
        cap.node_changed("ADDED", node)
    final = []
    for i, (node, gpus, owner, phase) in enumerate(pods):
        pod = _pod(f"p{i}", node, gpus, owner, phase=phase)
        cap.pod_changed("ADDED", _pod(f"p{i}", "gpu-h100-0", 1, owner))  # an earlier version
        cap.pod_changed("MODIFIED", pod)
        if i % 3 == 2:
            cap.pod_changed("DELETED", pod)
        else:
            final.append(pod)
    assert cap.inventory(exclude, 0) == build_inventory(nodes, final, exclude)


def test_a_claim_takes_gpus_until_its_pods_are_bound() -> None:
    cap = _capacity()
    owner = ("llm", "a")
    cap.claim(owner, Claim("rev1", (H100,), 1, 3), now=0)
    # Someone else sees the three GPUs taken (spread over the H100 nodes, as the scheduler would).
    assert _free_by_product(cap.inventory(("llm", "b"), 1)) == {H100: 13, A100: 4}
    assert sorted(_free(cap.inventory(("llm", "b"), 1)).values()) == [4, 6, 7]
    # The claimant itself does not count its own claim.
    assert _free_by_product(cap.inventory(owner, 1)) == {H100: 16, A100: 4}
    # Two pods bound: one GPU still promised, three held.
    cap.pod_changed("ADDED", _pod("a-0", "gpu-h100-0", 1, owner, "rev1"))
    cap.pod_changed("ADDED", _pod("a-1", "gpu-h100-1", 1, owner, "rev1"))
    assert _free_by_product(cap.inventory(None, 2)) == {H100: 13, A100: 4}
    assert cap.claims() == 1
    cap.pod_changed("ADDED", _pod("a-2", "gpu-h100-1", 1, owner, "rev1"))
    assert _free_by_product(cap.inventory(None, 3)) == {H100: 13, A100: 4}
    assert cap.claims() == 0  # fully bound: the claim is gone, the pods count


def test_pods_of_another_revision_do_not_fill_a_claim() -> None:
    cap = _capacity()
    owner = ("llm", "a")
    cap.pod_changed("ADDED", _pod("old", "gpu-h100-0", 1, owner, "rev0"))
    cap.claim(owner, Claim("rev1", (H100,), 1, 1), now=0)
    assert _free_by_product(cap.inventory(None, 1))[H100] == 14


def test_claims_expire_and_go_with_their_owner() -> None:
    cap = _capacity()
    cap.claim(("llm", "a"), Claim("r", (H100,), 8, 1), now=0)
    cap.claim(("llm", "b"), Claim("r", (H100,), 8, 1), now=0)
    assert _free_by_product(cap.inventory(None, 1))[H100] == 0
    cap.forget(("llm", "a"))
    assert _free_by_product(cap.inventory(None, 1))[H100] == 8
    assert _free_by_product(cap.inventory(None, CLAIM_SECONDS + 1))[H100] == 16
    assert cap.claims() == 0


def test_a_claim_overflows_to_its_next_product_and_a_new_claim_replaces_the_old() -> None:
    cap = _capacity()
    cap.claim(("llm", "a"), Claim("r", (H100, A100), 4, 5), now=0)  # 4 fit on the H100s, 1 on the A100
    assert _free_by_product(cap.inventory(None, 0)) == {H100: 0, A100: 0}
    cap.claim(("llm", "a"), Claim("r2", (A100,), 4, 1), now=0)
    assert _free_by_product(cap.inventory(None, 0)) == {H100: 16, A100: 0}


def test_placements_in_the_same_second_do_not_promise_the_same_gpus() -> None:
    """The race the bulk benchmark found: engines are pinned to the product they are placed on,
    so each placement must see the GPUs the ones before it took, before any pod exists."""
    body = sample("r1-distill-qwen-7b")
    body["spec"]["engine"] = {"runtime": "tensorrt-llm", "precision": "bf16"}
    body["spec"]["gpu"] = {"products": [H100, A100], "perReplica": 1}
    body["spec"]["replicas"] = 2
    spec = parse_spec(body["spec"])
    cap = _capacity()
    placed: dict[str, int] = {}
    refused = 0
    for i in range(12):
        plan = rv.plan_for(body, spec, cap.inventory(("llm", f"m{i}"), 0))
        if isinstance(plan, Refusal):
            refused += 1
            continue
        assert plan.gpu_product is not None
        placed[plan.gpu_product] = placed.get(plan.gpu_product, 0) + spec.replicas
        cap.claim(("llm", f"m{i}"), claim_for(plan, f"rev{i}", spec.replicas), 0)
    assert placed == {H100: 16, A100: 4}  # every GPU promised once, none twice
    assert refused == 2
