"""Shared set-up of the CRM tests against the daemon as a subprocess (test_providers_e2e,
test_provider_answers_e2e)."""

from __future__ import annotations

from pathlib import Path


def crm_config(
    tmp_path: Path, base_url: str, secret_line: str, *, backoff_cap_s: float, extra: str = ""
) -> str:
    """The config text: collection contacts to the CRM provider at ``base_url`` (account
    acc_1), its secret given by ``secret_line``, then ``extra`` (more tables)."""
    return f"""
[store]
path = "{tmp_path / "store.db"}"
[drop]
path = "{tmp_path / "drop"}"
settle_ms = 10
[collections.contacts]
key = "email"
timestamp = "updated_at"
providers = ["crm"]
[providers.crm]
kind = "crm"
base_url = "{base_url}"
account_id = "acc_1"
backoff_base_s = 0.05
backoff_cap_s = {backoff_cap_s}
{secret_line}
{extra}
"""
