"""The operator's one exception tree.

Errors from the Kubernetes client are mapped onto it in :mod:`deepseek_operator.kube`;
everything else raises one of these, so that callers can tell a user's mistake
(:class:`SpecError`) from a passing fault (:class:`TransientError`).
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator raises on purpose."""


class SpecError(OperatorError):
    """Input a user gave cannot be used; the message names the field and the fix."""


class TransientError(OperatorError):
    """A passing fault (conflict, 5xx, not ready yet): retry later."""


class GoneError(OperatorError):
    """The resource is gone, or going with its namespace: nothing to report or retry."""


class NamespaceTerminatingError(GoneError):
    """The namespace is being deleted: the API server takes nothing new in it, and the resource
    goes with it."""


class SimError(OperatorError):
    """The simulated cluster could not be started, reached or stopped."""


class ToolsMissingError(SimError):
    """A control-plane program is not in the tool cache; ``make tools`` builds it."""
