"""How the API server's refusals map onto the operator's errors."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from deepseek_operator.errors import NamespaceTerminatingError, OperatorError, SpecError, TransientError
from deepseek_operator.kube.client import _map_error


def _refusal(status: int, body: dict[str, object] | str) -> ApiException:
    e = ApiException(status=status, reason="x")
    e.body = body if isinstance(body, str) else json.dumps(body)
    return e


# As kube-apiserver v1.37.2's NamespaceLifecycle admission plugin answers (seen in the operator's
# log during a benchmark's namespace deletion).
TERMINATING = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": 'services "tiny" is forbidden: unable to create new content in namespace single-pt-5 '
    "because it is being terminated",
    "reason": "Forbidden",
    "details": {
        "name": "tiny",
        "kind": "services",
        "causes": [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace single-pt-5 is being terminated",
                "field": "metadata.namespace",
            }
        ],
    },
    "code": 403,
}


def test_a_namespace_being_deleted_is_its_own_error() -> None:
    err = _map_error(_refusal(403, TERMINATING), "apply Service single-pt-5/tiny")
    assert isinstance(err, NamespaceTerminatingError)
    assert "apply Service single-pt-5/tiny" in str(err)


def test_other_refusals_keep_their_meaning() -> None:
    rbac = {**TERMINATING, "details": {"name": "tiny", "kind": "services"}, "message": "forbidden: RBAC"}
    assert type(_map_error(_refusal(403, rbac), "apply")) is OperatorError  # a missing grant is said
    assert type(_map_error(_refusal(403, "not json"), "apply")) is OperatorError
    assert isinstance(_map_error(_refusal(409, TERMINATING), "apply"), TransientError)
    assert isinstance(_map_error(_refusal(422, {"message": "bad"}), "apply"), SpecError)
