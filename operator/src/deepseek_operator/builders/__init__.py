"""Pure builders: (owner body, parsed spec, plan) -> Kubernetes manifests as dicts.

No client, no clock: each child object is one function, tested by golden files.
"""
