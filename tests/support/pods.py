"""Pod states that kwok does not play by itself, written as a kubelet would report them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from deepseek_operator.api.clock import format_time


def crash_loop(core: Any, namespace: str, name: str) -> None:
    """Report the pod's ``triton`` container as crash-looping: Running, not Ready, restarted 5
    times, waiting in ``CrashLoopBackOff`` (what a kubelet reports for a container that keeps
    exiting)."""
    now = format_time(dt.datetime.now(dt.UTC))
    core.patch_namespaced_pod_status(
        name,
        namespace,
        {
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "False", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "False", "lastTransitionTime": now},
                ],
                "containerStatuses": [
                    {
                        "name": "triton",
                        "image": "nvcr.io/nvidia/tritonserver",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
                    }
                ],
            }
        },
    )
