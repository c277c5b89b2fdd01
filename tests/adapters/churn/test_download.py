"""The churn tool's error log is downloaded from the URL its answer names: only over http(s),
only from that host, and never from https back to http (a redirect that did so sent the signed
URL in clear)."""

from __future__ import annotations

import pytest
from dropsync.adapters.churn.adapter import download_refusal

HOST = "logs.example.com"


@pytest.mark.parametrize(
    ("url", "secure", "refused"),
    [
        ("https://logs.example.com/e/1?sig=x", True, None),
        ("http://logs.example.com/e/1", False, None),
        ("https://logs.example.com/e/2", False, None),  # http up to https: fine
        ("http://logs.example.com/e/1?sig=x", True, "from https to http"),
        ("https://elsewhere.example.com/e/1", True, "another host"),
        ("ftp://logs.example.com/e/1", False, "ftp URL"),
        ("/e/1", False, "relative URL"),
    ],
)
def test_a_log_url_or_redirect_is_refused_unless_safe(
    url: str, secure: bool, refused: str | None
) -> None:
    found = download_refusal(url, HOST, secure)
    assert (found is None) if refused is None else (found is not None and refused in found)
