"""Where the real third-party data sets are: ``../shared/data`` beside the checkout.

Tests that read them carry the ``shared_data`` marker: they are skipped, with the reason, when the
folder is missing, except under CI (``CI=true``), where a missing folder fails them.
"""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TELCO = SHARED_DATA / "telco_churn_ibm" / "Telco-Customer-Churn.csv"
NAB = SHARED_DATA / "nab"
MS_CLOUD = SHARED_DATA / "ms_cloud_monitoring"
UCC_TRACES = SHARED_DATA / "ucc_5g_traces" / "traces"
