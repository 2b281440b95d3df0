"""``cxstream eval churn`` on files of different shapes, and the metrics it reports."""

from __future__ import annotations

import csv
import json
import random

import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from cxstream.cli import main
from cxstream.csvfile import plain_number
from cxstream.evaluate import churn as ev
from tests.shared_data import TELCO


def write_bank_file(path, n=1200, seed=11):
    """A churn table unlike the Telco one: other names, a 0/1 label, a date-like id, blanks,
    a free-text column, categories that only appear late."""
    rng = random.Random(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["AccountNo", "Age", "Balance", "Region", "Products", "Active", "Note", "Exited"]
        )
        for i in range(n):
            age = rng.randint(18, 90)
            active = rng.random() < 0.5
            region = rng.choice(["North", "South", "East"] + (["Islands"] if i > n // 2 else []))
            risk = (
                -2.0
                + 0.04 * (age - 40)
                + (0.0 if active else 1.2)
                + (0.8 if region == "East" else 0)
            )
            exited = rng.random() < 1 / (1 + 2.718281828**-risk)
            balance = "" if rng.random() < 0.05 else f"{rng.uniform(0, 2e5):.2f}"
            w.writerow(
                [
                    f"ACC-{i:06d}",
                    age,
                    balance,
                    region,
                    rng.randint(1, 4),
                    int(active),
                    rng.choice(["", "called twice", "n/a"]),
                    int(exited),
                ]
            )


def test_metrics_agree_with_scikit_learn():
    rng = random.Random(2)
    y = [rng.random() < 0.3 for _ in range(500)]
    p = [min(max(rng.gauss(0.6 if t else 0.4, 0.2), 0.0), 1.0) for t in y]
    p[:50] = [0.5] * 50  # ties
    assert ev.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert ev.average_precision(y, p) == pytest.approx(average_precision_score(y, p))
    assert ev.log_loss(y, p) == pytest.approx(log_loss(y, p))


def test_a_file_with_another_schema_runs_unchanged(tmp_path):
    data = tmp_path / "bank.csv"
    write_bank_file(data)
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "churn",
            "--csv",
            str(data),
            "--label",
            "Exited",
            "--predictions",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["rows"] == 1200
    assert {
        "rows",
        "roc_auc",
        "roc_auc_last_fifth",
        "pr_auc",
        "log_loss",
        "accuracy",
        "rows_per_s",
    } <= set(summary)
    assert 0.5 < summary["roc_auc_last_fifth"] <= 1.0  # the last fifth holds both classes
    assert summary["numeric"] == ["Age", "Balance", "Products"]
    assert summary["categorical"] == ["Region", "Active"]
    assert "identifier" in summary["skipped"]["AccountNo"]  # found without --id
    assert summary["skipped"]["Note"] == "a single value"  # blanks and "n/a" are missing
    assert summary["roc_auc"] > 0.65  # learns the planted signal
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1200
    assert {r["label"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)


def test_the_configured_churn_model_is_the_one_evaluated(tmp_path, monkeypatch):
    """blend is built from the churn section like the flow's model: with trees off in the
    environment it is the linear part alone, and the prior set there is the one used."""
    data = tmp_path / "bank.csv"
    write_bank_file(data)

    def auc(model, **env):
        args = ["eval", "churn", "--csv", str(data), "--label", "Exited", "--model", model]
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            result = CliRunner().invoke(main, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])["roc_auc"]

    bayes = auc("bayes")
    assert auc("blend", CXSTREAM_CHURN__TREES="false") == bayes
    assert auc("bayes", CXSTREAM_CHURN__PRIOR_VARIANCE="0.01") != bayes


def test_positive_value_and_id_column_are_honoured(tmp_path):
    data = tmp_path / "t.csv"
    data.write_text(
        "cust,plan,months,status\n"
        + "".join(
            f"u{i},{'basic' if i % 3 else 'pro'},{i % 40},{'gone' if i % 3 else 'stayed'}\n"
            for i in range(300)
        )
    )
    args = ["eval", "churn", "--csv", str(data), "--label", "status", "--id", "cust", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "cannot tell which value of 'status' means churn" in result.output
    result = CliRunner().invoke(main, [*args, "--positive", "gone"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["skipped"] == {} and "cust" not in summary["categorical"]
    assert summary["roc_auc"] > 0.95
    bad = CliRunner().invoke(main, [*args, "--positive", "left"])
    assert "--positive 'left' never occurs in column 'status'" in bad.output
    missing = CliRunner().invoke(main, ["eval", "churn", "--csv", str(data), "--label", "Churn"])
    assert "--label 'Churn' is not a column" in missing.output
    both = CliRunner().invoke(main, [*args, "--id", "plan", "--positive", "gone"])
    assert both.exit_code == 0, both.output
    assert json.loads(both.output.strip().splitlines()[-1])["categorical"] == []  # plan left out
    other_case = ["eval", "churn", "--csv", str(data), "--label", "Status", "--id", "CUST"]
    result = CliRunner().invoke(main, [*other_case, "--positive", "Gone", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["roc_auc"] == summary["roc_auc"]


def test_a_name_written_twice_keeps_both_columns(tmp_path, caplog):
    # the first "score" decides churn, the second is noise: both are read, neither overwrites
    rng = random.Random(3)
    lines = ["score,plan,score,left"]
    for _ in range(400):
        risk, noise = rng.random(), rng.random()
        lines.append(f"{risk:.3f},{rng.choice('ab')},{noise:.3f},{int(risk > 0.7)}")
    data = tmp_path / "twice.csv"
    data.write_text("\n".join(lines) + "\n")
    rows, _, _ = ev.read_labelled(data, "left", None, None)
    assert set(rows[0]) == {"score", "plan", "score (field 3)"}
    assert rows[0]["score"] == lines[1].split(",")[0]
    assert "column 'score' appears again in field 3" in caplog.text
    report = ev.run_churn(data, "left")
    assert report.schema.numeric == ("score", "score (field 3)")
    assert report.roc_auc > 0.9


@pytest.mark.parametrize(
    ("values", "given", "meant"),
    [
        ({"True.", "False."}, "True", "True."),
        ({"True", "False"}, "true", "True"),
        ({"1.0", "0.0"}, "1", "1.0"),
        ({" Yes", "No"}, "yes", " Yes"),
    ],
)
def test_positive_matches_the_value_written_another_way(values, given, meant):
    assert ev._positive_value(values, given, "Churn") == meant


def test_positive_that_could_mean_two_values_is_refused():
    with pytest.raises(ev.DataError, match="never occurs"):
        ev._positive_value({"Yes", "yes", "no"}, "YES", "Churn")


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_spreadsheet_export_reads_as_its_comma_separated_utf8_twin(tmp_path, delimiter):
    """Another delimiter, decimal commas and Windows-1252 text (an accented category) give the
    same rows."""
    plain = tmp_path / "plain.csv"
    write_bank_file(plain, n=200)
    with plain.open(newline="") as fh:
        rows = list(csv.reader(fh))
    rows[1][3] = rows[2][3] = "Île-de-France"
    with plain.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    export = tmp_path / "export.csv"
    commas = [[cell.replace(".", ",") for cell in row] for row in rows]
    assert commas[1][2] != rows[1][2] and "," in commas[1][2]  # the balance, e.g. 12345,67
    with export.open("w", newline="", encoding="cp1252") as fh:
        csv.writer(fh, delimiter=delimiter).writerows(commas)
    with pytest.raises(UnicodeDecodeError):
        export.read_text(encoding="utf-8")
    expected = ev.read_labelled(plain, "Exited", None, "AccountNo")
    assert ev.read_labelled(export, "Exited", None, "AccountNo") == expected
    assert expected[0][0]["Region"] == "Île-de-France"


def test_a_file_of_one_class_gives_null_aucs_in_valid_json(tmp_path):
    data = tmp_path / "stayed.csv"
    data.write_text("a,left\n" + "".join(f"{i % 7},no\n" for i in range(100)))
    args = ["eval", "churn", "--csv", str(data), "--label", "left", "--positive", "no", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "ROC AUC n/a (one class only)" in result.output
    last = result.output.strip().splitlines()[-1]
    summary = json.loads(last, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert summary["roc_auc"] is None and summary["roc_auc_last_fifth"] is None


def test_a_label_typed_in_several_cases_reads_as_its_two_values(tmp_path, caplog):
    spellings = {True: ["Yes", "yes", "YES"], False: ["No", "no"]}
    data = tmp_path / "typed.csv"
    truth = [i % 3 == 0 for i in range(200)]
    data.write_text(
        "a,left\n"
        + "".join(
            f"{i % 7},{spellings[y][i // 3 % len(spellings[y])]}\n" for i, y in enumerate(truth)
        )
    )
    for positive in (None, "Yes", "yes"):
        _, labels, pos = ev.read_labelled(data, "left", positive, None)
        assert labels == truth and pos == "yes"
    assert (
        "label 'left' is written 5 ways (No, YES, Yes, no, yes): read as no and yes" in caplog.text
    )


def test_rows_shorter_or_longer_than_the_header_are_counted(tmp_path, caplog):
    data = tmp_path / "ragged.csv"
    data.write_text("a,b,left\n1,x,1\n2,y\n3,z,0,extra,more\n4,x,1,extra\n5,y,0\n")
    rows, labels, _ = ev.read_labelled(data, "left", None, None)
    assert [r["a"] for r in rows] == ["1", "3", "4", "5"] and labels == [True, False, True, False]
    assert "1 row without a label skipped" in caplog.text
    assert "1 row has fewer cells than the header" in caplog.text
    assert "2 rows have more cells than the header: the extra not read" in caplog.text


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_numbers_formatted_as_money_read_as_the_plain_numbers(tmp_path, delimiter):
    """A balance exported as ``$123,456.78`` (or ``123.456,78 €`` with a decimal comma) is the
    number it shows, not a category of thousands of values skipped as an identifier."""
    plain = tmp_path / "plain.csv"
    write_bank_file(plain, n=300)
    with plain.open(newline="") as fh:
        rows = list(csv.reader(fh))

    def money(cell):
        if not cell:
            return cell
        shown = f"{float(cell):,.2f}"
        if delimiter == ",":
            return "$" + shown
        return shown.replace(",", " ").replace(".", ",").replace(" ", ".") + " \u20ac"

    formatted = tmp_path / "money.csv"
    with formatted.open("w", newline="") as fh:
        csv.writer(fh, delimiter=delimiter).writerows(
            [rows[0], *([*r[:2], money(r[2]), *r[3:]] for r in rows[1:])]
        )
    grouped = "," if delimiter == "," else "."
    assert any(grouped in money(r[2]) for r in rows[1:])  # thousands were grouped
    read, labels, _ = ev.read_labelled(formatted, "Exited", None, "AccountNo")
    expected, expected_labels, _ = ev.read_labelled(plain, "Exited", None, "AccountNo")
    assert labels == expected_labels
    assert [float(r["Balance"] or "nan") for r in read] == pytest.approx(
        [float(r["Balance"] or "nan") for r in expected], nan_ok=True
    )
    assert ev.infer_schema(read).schema == ev.infer_schema(expected).schema
    # a long cell is read in one pass (no backtracking over runs of spaces), and left as it is
    odd = " " * 50_000 + "$" + " " * 50_000 + "1x"
    assert plain_number(odd, delimiter != ",") is odd


def test_a_unicode_text_export_reads_as_its_utf8_twin(tmp_path):
    """A spreadsheet's "Unicode text": UTF-16 with its byte-order mark, tab-separated."""
    plain = tmp_path / "plain.csv"
    write_bank_file(plain, n=200)
    export = tmp_path / "export.txt"
    export.write_text(plain.read_text().replace(",", "\t"), encoding="utf-16")
    assert export.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    expected = ev.read_labelled(plain, "Exited", None, "AccountNo")
    assert ev.read_labelled(export, "Exited", None, "AccountNo") == expected


@pytest.mark.parametrize(
    ("values", "churn"),
    [
        ({"True.", "False."}, "True."),  # some exports close every value with a full stop
        ({"1.0", "0.0"}, "1.0"),
        ({"0", "1"}, "1"),
        ({"No", "Yes"}, "Yes"),
        ({"F", "T"}, "T"),
    ],
)
def test_the_churn_value_is_guessed_from_the_usual_spellings(values, churn):
    assert ev._positive_value(values, None, "Churn") == churn


@pytest.mark.parametrize("values", [{"2.0", "1.0"}, {"1", "2"}, {"left", "stayed"}])
def test_a_label_whose_churn_value_is_unclear_asks_for_positive(values):
    with pytest.raises(ev.DataError, match="use --positive"):
        ev._positive_value(values, None, "Churn")


@pytest.mark.slow
@pytest.mark.shared_data
def test_telco_reaches_the_acceptance_auc_in_one_pass():
    report = ev.run_churn(ev.Path(TELCO), "Churn", id_column="customerID")
    assert report.rows == 7043
    assert report.roc_auc >= 0.84


def test_the_score_path_is_timed_on_rows_as_the_flow_has_them():
    # a profile holds numbers as numbers; the table's text is parsed before the timing
    rows = [{"tenure": "12", "charge": "", "contract": "1y"}, {"tenure": 3.0, "contract": "NA"}]
    typed = ev._typed(rows, ["tenure", "charge"])
    assert typed == [
        {"tenure": 12.0, "charge": None, "contract": "1y"},
        {"tenure": 3.0, "charge": None, "contract": "NA"},
    ]
    assert rows[0]["tenure"] == "12"  # the rows scored and learned are left as read
