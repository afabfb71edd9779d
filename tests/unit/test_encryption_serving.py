"""spec.model.encryption in the serving stack: the decrypt init container (the only one that
mounts the key Secret), the plaintext in a pod-local volume counted in memory, the golden pod
spec, the checked key Secret reference, and WeightsDecryptionFailed from the init container's
own message."""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator.__main__ import main
from deepseek_operator.api import spec as api_spec
from deepseek_operator.api.spec import parse_spec
from deepseek_operator.api.types import Role
from deepseek_operator.builders import serving
from deepseek_operator.diagnosis import pod_blocker, slim_pod
from deepseek_operator.encryption import folder
from deepseek_operator.encryption import format as fm
from deepseek_operator.errors import SpecError
from deepseek_operator.planning.placement import Refusal, catalog_nodes
from deepseek_operator.reconcile import report
from deepseek_operator.reconcile import revision as rv
from deepseek_operator.reconcile.facts import AnalysisRun
from deepseek_operator.reconcile.spec_step import references
from deepseek_operator.rollout.decisions import Measurement, Revisions
from deepseek_operator.rollout.figures import startup_failure
from deepseek_operator.status import Condition
from tests.support.world import World
from tests.unit.test_golden_children import GOLDEN, _body, _check, first_deployment
from tests.unit.test_golden_children import SAMPLES as GOLDEN_SAMPLES

pytestmark = pytest.mark.unit

ENCRYPTION = {"cipher": "sm4-gcm", "keySecret": {"name": "weights-key", "key": "key"}}


def encrypted_body(**encryption: Any) -> dict[str, Any]:
    (sample,) = [s for s in GOLDEN_SAMPLES if s.stem == "r1-distill-qwen-7b"]
    body = _body(sample)
    body["spec"]["engine"]["runtime"] = "pytorch"
    body["spec"]["model"]["encryption"] = {**copy.deepcopy(ENCRYPTION), **encryption}
    return body


def _deployment(body: dict[str, Any]) -> dict[str, Any]:
    (dep,) = [o for o in first_deployment(body) if o["kind"] == "Deployment"]
    return dep


def test_encrypted_children_match_golden() -> None:
    _check(first_deployment(encrypted_body()), GOLDEN / "encrypted-r1-qwen-7b.yaml")


def test_the_key_secret_is_mounted_only_into_the_decrypt_init_container() -> None:
    objects = first_deployment(encrypted_body())
    assert not [o for o in objects if o["kind"] == "Job"]  # the PyTorch path builds no engine
    pod = _deployment(encrypted_body())["spec"]["template"]["spec"]
    (key_volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert key_volume["secret"]["secretName"] == "weights-key"
    containers = pod["initContainers"] + pod["containers"]
    mounting = [
        c["name"] for c in containers if any(m["name"] == key_volume["name"] for m in c["volumeMounts"])
    ]
    assert mounting == ["decrypt-weights"]
    assert pod["initContainers"][0]["name"] == "decrypt-weights"  # before anything reads the model
    text = yaml.safe_dump(objects)
    assert text.count("secretName: weights-key") == 1  # one Secret volume, no env from it, no other object


def test_the_plaintext_lives_in_memory_counted_in_the_pods_memory() -> None:
    body = encrypted_body()
    spec = parse_spec(body["spec"])
    plan = rv.plan_for(body, spec, catalog_nodes())
    assert not isinstance(plan, Refusal)
    pod = _deployment(body)["spec"]["template"]["spec"]
    (plain,) = [v for v in pod["volumes"] if v["name"] == "plaintext-model"]
    size = serving.checkpoint_gib(spec, plan)
    assert plain["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{size}Gi"}
    # 7.6B parameters in BF16: about 14 GiB of weights on disk.
    assert 14 <= size <= 17
    (triton,) = pod["containers"]
    (decrypt, *_) = pod["initContainers"]
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert mounts["plaintext-model"] == {
        "name": "plaintext-model",
        "mountPath": "/decrypted-model",
        "readOnly": True,
    }
    plain_mount = {m["name"]: m for m in decrypt["volumeMounts"]}["plaintext-model"]
    assert not plain_mount.get("readOnly")
    memory = int(triton["resources"]["requests"]["memory"].removesuffix("Gi"))
    unencrypted = serving.host_memory_gib(plan)
    assert memory == unencrypted - round(plan.weights_gib + 0.5) + size
    assert memory >= size + serving.HOST_GIB_PER_RANK
    assert decrypt["resources"]["limits"]["memory"] == f"{size + serving.DECRYPT_WORK_GIB}Gi"
    # The model repository points Triton at the decrypted copy, never at the encrypted volume.
    (cm,) = [o for o in first_deployment(body) if o["kind"] == "ConfigMap"]
    assert "/decrypted-model" in yaml.safe_dump(cm) and "/models/deepseek" not in yaml.safe_dump(cm)


def test_node_disk_plaintext_is_an_emptydir_on_the_node_and_not_in_memory() -> None:
    body = encrypted_body(plaintextVolume="NodeDisk")
    pod = _deployment(body)["spec"]["template"]["spec"]
    (plain,) = [v for v in pod["volumes"] if v["name"] == "plaintext-model"]
    assert "medium" not in plain["emptyDir"] and plain["emptyDir"]["sizeLimit"].endswith("Gi")
    spec = parse_spec(body["spec"])
    plan = rv.plan_for(body, spec, catalog_nodes())
    assert not isinstance(plan, Refusal)
    (triton,) = pod["containers"]
    assert triton["resources"]["requests"]["memory"] == f"{serving.host_memory_gib(plan)}Gi"


def test_changing_the_key_secret_is_a_new_revision() -> None:
    def revision(body: dict[str, Any]) -> str:
        spec = parse_spec(body["spec"])
        plan = rv.plan_for(body, spec, catalog_nodes())
        assert not isinstance(plan, Refusal)
        return serving.revision_hash(spec, plan)

    plain = encrypted_body()
    del plain["spec"]["model"]["encryption"]
    revisions = {
        revision(plain),
        revision(encrypted_body()),
        revision(encrypted_body(keySecret={"name": "weights-key-2026-12"})),
        revision(encrypted_body(cipher="aes-256-gcm")),
    }
    assert len(revisions) == 4


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"keySecret": {"name": "Bad_Name"}}, "spec.model.encryption.keySecret.name"),
        ({"keySecret": {}}, "spec.model.encryption.keySecret.name"),
        ({"keySecret": {"name": "k", "key": "a/b"}}, "spec.model.encryption.keySecret.key"),
        ({"cipher": "des"}, "spec.model.encryption.cipher"),
        ({"plaintextVolume": "Tmp"}, "spec.model.encryption.plaintextVolume"),
    ],
)
def test_bad_encryption_fields_are_named(change: dict[str, Any], words: str) -> None:
    body = encrypted_body()
    body["spec"]["model"]["encryption"].update(change)
    with pytest.raises(SpecError, match=words.replace(".", r"\.")):
        parse_spec(body["spec"])


def test_encryption_needs_a_volume() -> None:
    body = encrypted_body()
    body["spec"]["model"]["source"] = {"uri": "s3://bucket/model"}
    with pytest.raises(SpecError, match=r"needs spec\.model\.source\.pvc"):
        parse_spec(body["spec"])


def test_the_key_secret_is_a_checked_reference() -> None:
    refs = references(parse_spec(encrypted_body()["spec"]), "llm")
    assert [(r.kind, r.name, r.field) for r in refs][-1] == (
        "Secret",
        "weights-key",
        "spec.model.encryption.keySecret.name",
    )


# --------------------------------------------------------------------------- the init container failing


def _run_pod_command(command: list[str], tmp: Path) -> int:
    """The decrypt init container's command, run here with the pod's paths mapped into ``tmp``."""
    assert command[0] == "deepseek-operator"
    mapped = [
        a.replace(serving.MODEL_MOUNT, str(tmp / "models"))
        .replace(serving.PLAINTEXT_MOUNT, str(tmp / "plain"))
        .replace(serving.KEY_MOUNT, str(tmp / "key"))
        for a in command[1:]
    ]
    return main([*mapped, "--workers", "1"])


def _failed_pod(message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "r1-qwen-7b-abc-1", "namespace": "llm"},
        "status": {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "decrypt-weights",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": message}},
                }
            ],
        },
    }


def test_the_pods_decrypt_command_decrypts_and_a_tampered_chunk_becomes_the_condition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    decrypt = _deployment(encrypted_body())["spec"]["template"]["spec"]["initContainers"][0]
    # The checkpoint as an admin would put it on the volume: encrypted at spec.model.source.pvc.path.
    src = tmp_path / "checkpoint"
    (src / "sub").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(5000))
    (src / "sub" / "config.json").write_text("{}")
    key = fm.new_key()
    (tmp_path / "key").mkdir()
    (tmp_path / "key" / "key").write_text(fm.format_key(key))
    enc = tmp_path / "models" / "deepseek" / "r1-qwen-7b"
    folder.encrypt_folder(src, enc, key, "sm4-gcm", 1024)
    assert _run_pod_command(decrypt["command"], tmp_path) == 0
    assert decrypt["command"][-2:] == ["--cipher", "sm4-gcm"]
    (tmp_path / "plain" / folder.DECRYPTED).unlink()
    assert _run_pod_command([*decrypt["command"][:-1], "aes-256-gcm"], tmp_path) == 2
    assert "encrypted with sm4-gcm, not aes-256-gcm" in capsys.readouterr().err
    assert _run_pod_command(decrypt["command"], tmp_path) == 0
    assert (tmp_path / "plain" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    # Tampered on the volume: the next pod's init container fails, naming the file and chunk.
    target = enc / "model.safetensors.enc"
    data = bytearray(target.read_bytes())
    data[fm.HEADER_SIZE + 2 * (1024 + fm.RECORD_OVERHEAD) + 40] ^= 4
    target.write_bytes(bytes(data))
    capsys.readouterr()
    (tmp_path / "plain" / folder.DECRYPTED).unlink()
    assert _run_pod_command(decrypt["command"], tmp_path) == 2
    log = capsys.readouterr().err
    assert "model.safetensors.enc: chunk 2 of 5" in log
    # FallbackToLogsOnError puts that log's end into the termination message; status quotes it.
    assert decrypt["terminationMessagePolicy"] == "FallbackToLogsOnError"
    blocker = pod_blocker([slim_pod(_failed_pod(log))], "serving")
    assert blocker is not None and blocker.reason == "WeightsDecryptionFailed"
    assert "model.safetensors.enc: chunk 2 of 5" in blocker.message
    assert "r1-qwen-7b-abc-1" in blocker.message and "keySecret" in blocker.message


def test_a_wrong_key_is_named_in_the_blocker() -> None:
    message = (
        "deepseek-operator: wrong key: the checkpoint was encrypted with key id aa, the key given has id bb"
    )
    pod = _failed_pod(message)
    pod["status"]["initContainerStatuses"][0]["state"] = {"terminated": {"exitCode": 2, "message": message}}
    blocker = pod_blocker([pod], "serving")
    assert blocker is not None and blocker.reason == "WeightsDecryptionFailed"
    assert "wrong key" in blocker.message and "exit code 2" in blocker.message


def test_other_init_containers_failing_are_not_decryption_failures() -> None:
    pod = _failed_pod("boom")
    pod["status"]["initContainerStatuses"][0]["name"] = "assemble-model-repository"
    blocker = pod_blocker([pod], "serving")
    assert blocker is not None and blocker.reason == "CrashLoopBackOff"


def test_decryption_failure_sets_engine_ready_false_and_one_event() -> None:
    pod = _failed_pod("deepseek-operator: x.enc: chunk 0 of 1 (plaintext bytes 0..3): authentication failed")
    blocker = pod_blocker([pod], "serving")
    assert blocker is not None
    conds = report._blocked_conditions([Condition("Ready", "False", "Pending", "")], "Pending", blocker)
    engine = next(c for c in conds if c.type == "EngineReady")
    assert (engine.status, engine.reason) == ("False", "WeightsDecryptionFailed")
    assert "x.enc: chunk 0 of 1" in engine.message
    patch = {"conditions": [{"type": "EngineReady", "reason": engine.reason, "message": engine.message}]}
    assert report.decryption_events({}, patch) == [("Warning", "WeightsDecryptionFailed", engine.message)]
    assert report.decryption_events(patch, patch) == []  # not again while it says the same


# --------------------------------------------------------------------------- a canary that cannot decrypt


def test_a_canary_that_cannot_decrypt_is_rolled_back_and_the_stable_revision_serves_on() -> None:
    plain = encrypted_body()
    del plain["spec"]["model"]["encryption"]
    w = World(plain)
    w.converge()
    stable = Revisions.from_status(w.body["status"]["revisions"]).stable
    w.references[("Secret", "weights-key")] = True
    w.change_spec(model__encryption=copy.deepcopy(ENCRYPTION))
    w.converge()
    canary = Revisions.from_status(w.body["status"]["revisions"]).canary
    assert canary and canary != stable
    line = (
        "deepseek-operator: wrong key: the checkpoint was encrypted with key id aa, the key given has id bb"
    )

    def break_canary() -> list[dict[str, Any]]:
        pods = [p for (k, _), p in w.children.items() if k == "Pod" and canary in p["metadata"]["name"]]
        for pod in pods:
            pod["status"] = _failed_pod(line)["status"]
        dep = w.children[("Deployment", f"r1-qwen-7b-{canary}")]
        dep["status"] = {**dep["status"], "readyReplicas": 0}
        return pods

    pods = break_canary()
    assert pods
    w.apply(w.decide())
    conds = {c["type"]: c for c in w.body["status"]["conditions"]}
    assert conds["EngineReady"]["reason"] == "WeightsDecryptionFailed"
    assert "wrong key" in conds["EngineReady"]["message"]
    assert conds["Ready"]["status"] == "True"  # the stable revision serves
    assert [e for e in w.events if e[1] == "WeightsDecryptionFailed"]
    for _ in range(3):  # failureLimit analyses of a canary whose pods cannot start
        w.now += dt.timedelta(seconds=31)
        failure = startup_failure(break_canary())
        assert failure and "decrypt-weights" in failure
        run = AnalysisRun(canary, Role.CANARY, Measurement(startup_failure=failure), None)
        w.apply(w.decide(run))
    revs = Revisions.from_status(w.body["status"]["revisions"])
    assert revs.stable == stable and not revs.canary and canary in revs.failed
    assert w.body["status"]["lastRollback"]["from"] == canary
    assert ("Deployment", f"r1-qwen-7b-{stable}") in w.children


# --------------------------------------------------------------------------- the engine path


def engine_body() -> dict[str, Any]:
    body = encrypted_body()
    body["spec"]["engine"]["runtime"] = "tensorrt-llm"
    return body


def _job(body: dict[str, Any]) -> dict[str, Any]:
    (job,) = [o for o in first_deployment(body) if o["kind"] == "Job"]
    return job


def test_encrypted_engine_path_children_match_golden() -> None:
    _check(first_deployment(engine_body()), GOLDEN / "encrypted-r1-qwen-7b-engine.yaml")


def _mounting(pod: dict[str, Any], volume: str) -> list[str]:
    return [
        c["name"]
        for c in pod.get("initContainers", []) + pod["containers"]
        if any(m["name"] == volume for m in c["volumeMounts"])
    ]


def test_engine_path_key_only_where_it_decrypts_or_encrypts() -> None:
    job = _job(engine_body())["spec"]["template"]["spec"]
    assert [c["name"] for c in job["initContainers"]] == ["decrypt-weights", "build"]
    assert [c["name"] for c in job["containers"]] == ["encrypt-engine"]
    assert _mounting(job, "weights-key") == ["decrypt-weights", "encrypt-engine"]
    (build,) = [c for c in job["initContainers"] if c["name"] == "build"]
    assert "nvidia.com/gpu" in build["resources"]["limits"]  # the GPUs build; the key is not there
    assert {m["name"]: m.get("readOnly", False) for m in build["volumeMounts"]}["plaintext-model"] is True
    pod = _deployment(engine_body())["spec"]["template"]["spec"]
    names_ = [c["name"] for c in pod["initContainers"]]
    assert names_[:3] == ["decrypt-weights", "wait-for-engine", "decrypt-engine"]
    assert _mounting(pod, "weights-key") == ["decrypt-weights", "decrypt-engine"]
    (triton,) = pod["containers"]
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert (
        mounts["plaintext-engine"]["mountPath"] == "/decrypted-engine"
        and mounts["plaintext-engine"]["readOnly"]
    )
    # The serving pod decrypts the tokenizer, not the weights the engine replaces.
    decrypt = pod["initContainers"][0]["command"]
    assert "--exclude" in decrypt and "*.safetensors" in decrypt
    (cm,) = [o for o in first_deployment(engine_body()) if o["kind"] == "ConfigMap"]
    text = yaml.safe_dump(cm)
    assert "/decrypted-engine" in text and "/decrypted-model" in text


def test_the_encrypted_engine_has_its_own_cache_entry_and_is_waited_for_by_its_manifest() -> None:
    def cache_dir(body: dict[str, Any]) -> str:
        spec = parse_spec(body["spec"])
        plan = rv.plan_for(body, spec, catalog_nodes())
        assert not isinstance(plan, Refusal)
        return serving.engine_cache_dir(spec, plan)

    plain = engine_body()
    del plain["spec"]["model"]["encryption"]
    other_key = engine_body()
    other_key["spec"]["model"]["encryption"]["keySecret"] = {"name": "weights-key-2"}
    assert len({cache_dir(plain), cache_dir(engine_body()), cache_dir(other_key)}) == 3
    wait = next(
        c
        for c in _deployment(engine_body())["spec"]["template"]["spec"]["initContainers"]
        if c["name"] == "wait-for-engine"
    )
    assert f"{cache_dir(engine_body())}/dso-manifest.json" in wait["command"][-1]
    script = next(
        c for c in _job(engine_body())["spec"]["template"]["spec"]["initContainers"] if c["name"] == "build"
    )
    text = script["command"][-1]
    assert f"if [ -f {cache_dir(engine_body())}/dso-manifest.json ]; then" in text
    assert "--model_dir /decrypted-model" in text and "--output_dir /engine-work/engine" in text


def test_engine_path_memory_counts_the_plaintext() -> None:
    body = engine_body()
    spec = parse_spec(body["spec"])
    plan = rv.plan_for(body, spec, catalog_nodes())
    assert not isinstance(plan, Refusal)
    job = _job(body)["spec"]["template"]["spec"]
    build = next(c for c in job["initContainers"] if c["name"] == "build")
    extra = serving.checkpoint_gib(spec, plan) + 2 * serving.engine_gib(plan)
    assert build["resources"]["limits"]["memory"] == f"{serving.build_memory_gib(plan) + extra}Gi"
    (triton,) = _deployment(body)["spec"]["template"]["spec"]["containers"]
    want = serving.serving_memory_gib(spec, plan)
    assert triton["resources"]["limits"]["memory"] == f"{want}Gi"
    assert want == serving.host_memory_gib(plan) - round(
        plan.weights_gib + 0.5
    ) + serving.TOKENIZER_GIB + serving.engine_gib(plan)


def _run(command: list[str], tmp: Path) -> int:
    mapped = [
        a.replace(serving.MODEL_MOUNT, str(tmp / "models"))
        .replace(serving.ENGINE_PLAIN_MOUNT, str(tmp / "engine"))
        .replace(serving.ENGINE_WORK_MOUNT, str(tmp / "work"))
        .replace(serving.PLAINTEXT_MOUNT, str(tmp / "plain"))
        .replace(serving.KEY_MOUNT, str(tmp / "key"))
        for a in command[1:]
    ]
    return main([*mapped, "--workers", "1"])


def test_the_engine_path_commands_end_to_end(tmp_path: Path) -> None:
    """The build Job's and the serving pod's own commands, run here in their order (the build
    itself stands in: it writes engine files where trtllm-build would)."""
    body = engine_body()
    job = _job(body)["spec"]["template"]["spec"]
    pod = _deployment(body)["spec"]["template"]["spec"]
    key = fm.new_key()
    (tmp_path / "key").mkdir()
    (tmp_path / "key" / "key").write_text(fm.format_key(key))
    src = tmp_path / "checkpoint"
    src.mkdir()
    (src / "model-00001-of-00002.safetensors").write_bytes(os.urandom(3000))
    (src / "tokenizer.json").write_text('{"tokens": 1}')
    (src / "config.json").write_text("{}")
    folder.encrypt_folder(src, tmp_path / "models" / "deepseek" / "r1-qwen-7b", key, "sm4-gcm", 512)
    by_name = {c["name"]: c for c in job["initContainers"] + job["containers"]}
    assert _run(by_name["decrypt-weights"]["command"], tmp_path) == 0
    assert (tmp_path / "plain" / "model-00001-of-00002.safetensors").exists()  # the build needs all of it
    engine = tmp_path / "work" / "engine"
    engine.mkdir(parents=True)
    (engine / "rank0.engine").write_bytes(os.urandom(5000))
    (engine / "config.json").write_text('{"build": 1}')
    assert _run(by_name["encrypt-engine"]["command"], tmp_path) == 0
    assert _run(by_name["encrypt-engine"]["command"], tmp_path) == 0  # a cache hit: nothing to do
    cached = [p for p in (tmp_path / "models").rglob("*.enc") if "engines" in str(p)]
    assert sorted(p.name for p in cached) == ["config.json.enc", "rank0.engine.enc"]
    # The serving pod: tokenizer and configs, then the engine.
    shutil.rmtree(tmp_path / "plain")
    serve = {c["name"]: c for c in pod["initContainers"]}
    assert _run(serve["decrypt-weights"]["command"], tmp_path) == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        ".dso-decrypted",
        "config.json",
        "tokenizer.json",
    ]
    assert _run(serve["decrypt-engine"]["command"], tmp_path) == 0
    assert (tmp_path / "engine" / "rank0.engine").read_bytes() == (engine / "rank0.engine").read_bytes()


def test_a_decryption_failure_in_the_build_job_is_named() -> None:
    from deepseek_operator.diagnosis import job_blocker  # noqa: PLC0415

    pod = _failed_pod("deepseek-operator: wrong key: the checkpoint was encrypted with key id aa")
    pod["status"]["phase"] = "Failed"
    pod["status"]["initContainerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 2, "message": "wrong key"}
    }
    job = {"metadata": {"name": "build-x"}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    blocker = job_blocker(job, [pod])
    assert blocker is not None and (blocker.reason, blocker.where) == ("WeightsDecryptionFailed", "engine")
    running = job_blocker({"metadata": {"name": "build-x"}}, [_failed_pod("wrong key")])
    assert running is not None and running.reason == "WeightsDecryptionFailed"


def test_the_decrypt_image_is_the_operators_own_unless_the_spec_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert api_spec.default_decrypt_image({}) == api_spec.DEFAULT_DECRYPT_IMAGE
    monkeypatch.setenv(api_spec.DECRYPT_IMAGE_ENV, "registry.internal.example/dso:1.2")
    defaulted = parse_spec(encrypted_body()["spec"]).encryption
    assert defaulted is not None and defaulted.image == "registry.internal.example/dso:1.2"
    named = parse_spec(encrypted_body(image="other/dso:3")["spec"]).encryption
    assert named is not None and named.image == "other/dso:3"
