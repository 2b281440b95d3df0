from __future__ import annotations

import io
from pathlib import Path

import pytest

from cxstream.customers import customers_to_csv, load_mapping, read_customers
from cxstream.devtools.simulate import Simulator
from cxstream.errors import ConfigError
from cxstream.events import Channel, ConsentStatus, ValueTier
from tests.shared_data import TELCO

MAPPING = Path(__file__).parents[2] / "config" / "mappings" / "telco_ibm.yaml"


@pytest.mark.shared_data
def test_ibm_telco_file_loads_through_the_shipped_mapping():
    with TELCO.open(newline="") as fh:
        result = read_customers(fh, load_mapping(MAPPING))
    assert len(result.customers) == 7043
    assert result.rejected == []
    first = result.customers[0]
    assert first.subscriber_id == "7590-VHVEG"
    assert (first.contract, first.plan, first.plan_mbps) == ("month_to_month", "DSL", 25)
    assert first.value_tier is ValueTier.BRONZE  # 29.85 a month
    assert first.consent == {}  # the file carries no consent: nobody may be contacted
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


def test_a_mapping_reads_yes_and_no_as_the_csv_values_they_name(tmp_path):
    spec = tmp_path / "m.yaml"  # unquoted: YAML 1.1 would read true and false
    spec.write_text(
        "columns: {subscriber_id: id}\nconsent: {sms: SmsOk}\nvalues: {consent: {Yes: granted, No: denied}}\n"
    )
    result = read_customers(io.StringIO("id,SmsOk\na,Yes\nb,No\n"), load_mapping(spec))
    assert [c.consent for c in result.customers] == [
        {Channel.SMS: ConsentStatus.GRANTED},
        {Channel.SMS: ConsentStatus.DENIED},
    ]


def test_a_mapping_that_names_a_channel_twice_is_a_config_error(tmp_path):
    twice = tmp_path / "m.yaml"
    twice.write_text("columns: {subscriber_id: id}\nconsent:\n  sms: SmsOptOut\n  sms: SmsOk\n")
    with pytest.raises(ConfigError, match=r"(?s)'sms' a second time \(first at line 3\)"):
        load_mapping(twice)


def test_a_mapping_cannot_grant_consent_by_default(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("columns:\n  subscriber_id: id\ndefaults:\n  consent: {sms: granted}\n")
    with pytest.raises(ConfigError, match=r"defaults\.consent: consent is read only from the file"):
        load_mapping(bad)


def test_consent_comes_from_the_mapped_columns_only(tmp_path):
    spec = tmp_path / "m.yaml"
    spec.write_text(
        "columns: {subscriber_id: id}\n"
        "consent: {sms: SmsOk, email: MailOk}\n"
        "values: {consent: {'Yes': granted, 'No': denied}}\n"
    )
    text = "id,SmsOk,MailOk\na,Yes,No\nb,,Yes\nc,Maybe,\n"
    result = read_customers(io.StringIO(text), load_mapping(spec))
    consent = {c.subscriber_id: c.consent for c in result.customers}
    assert consent == {
        "a": {Channel.SMS: ConsentStatus.GRANTED, Channel.EMAIL: ConsentStatus.DENIED},
        "b": {Channel.EMAIL: ConsentStatus.GRANTED},  # blank: unknown, not granted
    }
    ((line, reason),) = result.rejected
    assert line == 4
    assert "column 'SmsOk' (consent)" in reason


def test_a_header_naming_a_column_twice_loads_nothing(tmp_path):
    # which of the two holds the customer's consent is unknown: nothing is guessed
    text = "subscriber_id,consent_sms,monthly_charge,consent_sms\ns1,denied,10,granted\n"
    result = read_customers(io.StringIO(text))
    assert result.customers == []
    assert result.rejected == [
        (
            1,
            "the header names a column more than once ('consent_sms' in fields 2, 4): nothing is loaded",
        )
    ]
    notes = "subscriber_id,note,consent_sms,note\ns1,x,granted,y\n"  # a column nobody reads
    assert [c.subscriber_id for c in read_customers(io.StringIO(notes)).customers] == ["s1"]
    # through a mapping, only the columns it reads must be unique
    spec = tmp_path / "m.yaml"
    spec.write_text("columns: {subscriber_id: id}\nconsent: {sms: SmsOk}\n")
    text = "id,Note,SmsOk,Note\na,x,granted,y\n"
    result = read_customers(io.StringIO(text), load_mapping(spec))
    assert [c.consent for c in result.customers] == [{Channel.SMS: ConsentStatus.GRANTED}]
    twice = read_customers(io.StringIO("id,SmsOk,SmsOk\na,denied,granted\n"), load_mapping(spec))
    assert twice.customers == []
    assert "'SmsOk' in fields 2, 3" in twice.rejected[0][1]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_spreadsheet_export_reads_as_its_comma_separated_twin(tmp_path, delimiter):
    spec = tmp_path / "m.yaml"
    spec.write_text("columns: {subscriber_id: id, monthly_charge: Charge}\nconsent: {sms: SmsOk}\n")
    plain = 'id,Charge,SmsOk,Note\na,29.85,granted,x\nb,105.5,denied,"y, z"\n'
    export = plain.replace(",", delimiter).replace("29.85", "29,85").replace("105.5", "105,5")
    export = export.replace(f"y{delimiter} z", "y, z")  # a quoted comma stays a comma
    assert delimiter in export and "29,85" in export
    got = read_customers(io.StringIO(export), load_mapping(spec))
    want = read_customers(io.StringIO(plain), load_mapping(spec))
    assert got.rejected == want.rejected == []
    assert got.customers == want.customers
    assert [c.monthly_charge for c in got.customers] == [29.85, 105.5]
    money = read_customers(io.StringIO('id,Charge\na,"$1,234.50"\n'), load_mapping(spec))
    assert [c.monthly_charge for c in money.customers] == [1234.5]  # as a spreadsheet shows it


def test_short_and_long_rows_are_rejected_whole():
    text = (
        "subscriber_id,monthly_charge,tenure_months,consent_sms\n"
        "1234-BROKEN,0,Yes\n"  # a field short: nothing of it is loaded
        "s2,10,3,granted,extra\n"
        "s3,10,3,granted\n"
    )
    result = read_customers(io.StringIO(text))
    assert [c.subscriber_id for c in result.customers] == ["s3"]
    assert result.rejected == [
        (2, "row has 3 fields, the header 4"),
        (3, "row has 5 fields, the header 4"),
    ]


@pytest.mark.shared_data
def test_every_error_of_a_row_is_reported_with_its_column(tmp_path):
    text = "subscriber_id,monthly_charge,tenure_months\ns1,lots,-2\n"
    ((line, reason),) = read_customers(io.StringIO(text)).rejected
    assert line == 2
    assert "column 'monthly_charge'" in reason
    assert "column 'tenure_months'" in reason
    # through a mapping, the file's own column names
    with TELCO.open(newline="") as fh:
        header = fh.readline()
    row = "7590-VHVEG,Female,0,Yes,No,one,No,No phone service,DSL,No,Yes,No,No,No,No,Month-to-month,Yes,Electronic check,cheap,29.85,No\n"
    ((_, reason),) = read_customers(io.StringIO(header + row), load_mapping(MAPPING)).rejected
    assert "column 'tenure' (tenure_months)" in reason
    assert "column 'MonthlyCharges' (monthly_charge)" in reason


def test_an_unterminated_quote_loads_nothing_of_the_rest():
    text = 'subscriber_id,monthly_charge\ns1,10\n"s2,20\ns3,30\n'
    result = read_customers(io.StringIO(text))
    assert [c.subscriber_id for c in result.customers] == ["s1"]
    ((line, reason),) = result.rejected
    assert line == 3
    assert "malformed CSV" in reason
