"""What the RBAC tests count as a refusal in the operator's log."""

from __future__ import annotations

from tests.support.chart import refusals


def test_a_refusal_in_the_operator_log_is_found_and_a_timestamp_is_not() -> None:
    url = 'https://127.0.0.1:1 "GET /api/v1/x HTTP/1.1"'
    quiet = (
        "[2026-12-01 16:58:56,403] deepseek_operator.re [DEBUG   ] t/m: gather 0.2 ms\n"
        f"[2026-12-01 16:58:56,339] urllib3.connectionpo [DEBUG   ] {url} 200 403\n"
    )
    assert refusals(quiet) == []
    refused = f"[2026-12-01 16:58:57,001] urllib3.connectionpo [DEBUG   ] {url} 403 250"
    kopf = "[2026-12-01 16:58:57,002] kopf.objects [ERROR   ] APIForbiddenError: ('pods is forbidden', ...)"
    assert refusals(quiet + refused + "\n" + kopf) == [refused, kopf]
