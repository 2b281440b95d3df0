from __future__ import annotations

import io
from pathlib import Path

import pytest

from cxstream.customers import customers_to_csv, load_mapping, read_customers
from cxstream.errors import ConfigError
from cxstream.events import Channel, ConsentStatus, ValueTier
from cxstream.simulate import Simulator

TELCO = (
    Path(__file__).parents[3] / "shared" / "data" / "telco_churn_ibm" / "Telco-Customer-Churn.csv"
)
MAPPING = Path(__file__).parents[2] / "config" / "mappings" / "telco_ibm.yaml"


def test_ibm_telco_file_loads_through_the_shipped_mapping():
    with TELCO.open(newline="") as fh:
        result = read_customers(fh, load_mapping(MAPPING))
    assert len(result.customers) == 7043
    assert result.rejected == []
    first = result.customers[0]
    assert first.subscriber_id == "7590-VHVEG"
    assert (first.contract, first.plan, first.plan_mbps) == ("month_to_month", "DSL", 25)
    assert first.value_tier is ValueTier.BRONZE  # 29.85 a month
    assert first.consent[Channel.SMS] is ConsentStatus.GRANTED
    tiers = {c.value_tier for c in result.customers}
    assert tiers == set(ValueTier)


def test_simulator_profiles_round_trip_through_the_canonical_csv():
    profiles = list(Simulator(20, 3, seed=1).profiles())
    buf = io.StringIO()
    assert customers_to_csv(profiles, buf) == 20
    again = read_customers(io.StringIO(buf.getvalue()))
    assert again.rejected == []
    assert again.customers == profiles


def test_bad_rows_are_reported_with_line_and_reason_not_dropped():
    text = (
        "subscriber_id,monthly_charge,timezone\ns1,10,UTC\ns2,-5,UTC\n,3,UTC\ns4,4,Nowhere/Land\n"
    )
    result = read_customers(io.StringIO(text))
    assert [c.subscriber_id for c in result.customers] == ["s1"]
    lines = [line for line, _ in result.rejected]
    assert lines == [3, 4, 5]
    assert "monthly_charge" in result.rejected[0][1]
    assert "subscriber_id" in result.rejected[1][1]
    assert "timezone" in result.rejected[2][1]


def test_mapping_naming_an_unknown_field_is_a_config_error(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("columns:\n  subscriber_id: id\n  loyalty: Loyalty\n")
    with pytest.raises(ConfigError, match=r"columns\.loyalty"):
        load_mapping(bad)
    typo = tmp_path / "t.yaml"
    typo.write_text("colums: {}\n")
    with pytest.raises(ConfigError, match="colums"):
        load_mapping(typo)
