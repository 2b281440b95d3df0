"""The churn model: features, learning, explanations, checkpoints (no sockets)."""

from __future__ import annotations

import base64
import json
import math
import pickle
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxstream.detectors.churn import (
    CHECKPOINT_FORMAT,
    ChurnLearner,
    ChurnModel,
    IncompatibleCheckpoint,
    QualityMonitor,
    Schema,
    UntrustedCheckpoint,
    infer_schema,
)
from cxstream.detectors.churn_features import (
    _category,
    parse_number,
    parse_numbers,
    read_categories,
)

HEAD = b"cxstream-churn:%d" % CHECKPOINT_FORMAT
SCHEMA = Schema(numeric=("tenure", "charge"), categorical=("contract", "plan"))


def synthetic(n, seed=3):
    """Churn driven by short tenure and month-to-month contracts; plan is noise."""
    rng = random.Random(seed)
    rows, labels = [], []
    for _ in range(n):
        tenure = rng.randint(0, 72)
        contract = rng.choice(["monthly", "1y", "2y"])
        logit = -1.0 - 0.05 * tenure + (2.0 if contract == "monthly" else -1.0)
        y = rng.random() < 1 / (1 + math.exp(-logit))
        row = {
            "tenure": tenure,
            "charge": rng.uniform(20, 120),
            "contract": contract,
            "plan": rng.choice(["a", "b"]),
        }
        rows.append(row)
        labels.append(y)
    return rows, labels


def trained(n=1500):
    model = ChurnModel(SCHEMA)
    rows, labels = synthetic(n)
    for row, y in zip(rows, labels, strict=True):
        model.learn_one(row, y)
    return model


def test_schema_inference_types_flags_ids_and_constants():
    rows = [
        {"id": f"c{i}", "n": str(i * 1.5), "flag": str(i % 2), "cat": "xyz"[i % 3], "k": "1"}
        for i in range(200)
    ]
    rows[3]["n"] = " "  # a blank is missing, not text
    inferred = infer_schema(rows)
    assert inferred.schema.numeric == ("n",)
    assert inferred.schema.categorical == ("flag", "cat")
    assert "identifier" in inferred.skipped["id"]
    assert inferred.skipped["k"] == "a single value"


def test_a_row_number_or_sequential_id_is_skipped_and_other_whole_numbers_are_kept():
    rng = random.Random(4)
    ids = rng.sample(range(10_000_000, 20_000_000), 300)
    rows = [
        {
            "RowNumber": str(i + 1),
            "account": str(7_000 + 3 * i),  # sequential, with gaps
            "customer": str(ids[i]),  # unique whole numbers in no order: numeric, as any other
            "tenure": str(i // 4),  # sorted, with ties
            "calls": str(rng.randint(0, 9)),
            "late": str(i + 1) if i != 250 else str(i - 5),  # rises, then falls once
        }
        for i in range(300)
    ]
    inferred = infer_schema(rows)
    assert set(inferred.skipped) == {"RowNumber", "account"}
    assert "row number" in inferred.skipped["RowNumber"]
    assert inferred.schema.numeric == ("customer", "tenure", "calls", "late")
    rows[10]["account"] = ""  # a blank breaks the count: the column is kept
    assert "account" in infer_schema(rows).schema.numeric


def test_a_number_column_with_a_few_words_in_it_stays_numeric_and_reads_them_as_missing():
    rows = [
        {"charges": f"{20 + i * 0.7:.2f}", "price": "Unknown" if i % 2 else str(i % 9 * 10)}
        for i in range(200)
    ]
    for i in (5, 50, 150):
        rows[i]["charges"] = "#N/A"  # 1.5 % of the cells: markers, not categories
    inferred = infer_schema(rows)
    assert inferred.schema.numeric == ("charges",)
    assert inferred.schema.categorical == ("price",)  # half words: a category, as before
    model = ChurnModel(inferred.schema)
    model.learn_one(rows[5], True)
    assert "charges=<missing>" in model.features.index
    assert "charges=#N/A" not in model.features.index
    assert 0.0 < model.predict_proba_one(rows[5])[True] < 1.0


def test_prequential_learning_beats_chance_and_is_calibrated_early():
    model = ChurnModel(SCHEMA)
    rows, labels = synthetic(2000)
    first = model.predict_proba_one(rows[0])
    assert first[True] == pytest.approx(0.5)  # knows nothing yet: says so
    probs = []
    for row, y in zip(rows, labels, strict=True):
        probs.append(model.predict_proba_one(row)[True])
        model.learn_one(row, y)
    from cxstream.evaluate.churn import roc_auc

    assert roc_auc(labels[500:], probs[500:]) > 0.75


def test_missing_values_and_unseen_categories_do_not_crash_or_grow_the_scorer():
    model = trained()
    dim = model.learner.dim
    p = model.predict_proba_one({"tenure": None, "contract": "never seen", "plan": ""})[True]
    assert 0.0 < p < 1.0
    assert model.learner.dim == dim  # scoring never adds features
    model.learn_one({"tenure": "", "contract": "lifetime"}, True)  # learning does
    assert "contract=lifetime" in model.features.index
    assert "tenure=<missing>" in model.features.index


def test_categories_beyond_the_limit_are_pooled():
    model = ChurnModel(Schema(categorical=("city",)), max_categories=3)
    for i in range(10):
        model.learn_one({"city": f"c{i}"}, i % 2 == 0)
    cities = [n for n in model.features.names if n.startswith("city=")]
    assert cities == ["city=c0", "city=c1", "city=c2", "city=<other>"]


def test_batch_scores_equal_one_at_a_time_scores():
    model = trained()
    rows, _ = synthetic(50, seed=9)
    rows.append({"tenure": None, "contract": "unknown"})
    batch = model.predict_proba_many(rows)
    single = np.array([model.predict_proba_one(r)[True] for r in rows])
    np.testing.assert_allclose(batch, single, rtol=1e-9)


MESSY_NUMBERS = ["12", " 7 ", "", "na", "1e400", True, 10**400, [1], None, 3, 2.5, "nan", b"4"]
MESSY_CATEGORIES = ["monthly", " monthly ", 1, 1.0, True, None, ["x"], "NA", "2y", b"1y", "1y"]


def test_batch_reading_of_messy_cells_agrees_with_reading_each_cell():
    rows = [
        {"tenure": t, "charge": 50.0, "contract": c}
        for t in MESSY_NUMBERS
        for c in MESSY_CATEGORIES
    ]
    each = [np.nan if (v := parse_number(r["tenure"])) is None else v for r in rows]
    np.testing.assert_array_equal(parse_numbers(rows, ["tenure"])[:, 0], each)
    plain = [1, 2.5, " 3 ", None, True, "", "NA", "nan", "1e400"] * 10  # numpy's one-call path
    np.testing.assert_array_equal(
        parse_numbers([{"tenure": t} for t in plain], ["tenure"])[:, 0],
        [1, 2.5, 3, np.nan, 1, np.nan, np.nan, np.nan, np.nan] * 10,
    )
    # several columns at once; a row without a column, or a word in one, reads each on its own
    wide = [{"tenure": t, "charge": c} for t, c in zip(plain, reversed(plain), strict=True)]
    for batch in (wide, [*wide, {"tenure": 4}], [*wide, {"tenure": 4, "charge": "many"}]):
        each = [
            [np.nan if (v := parse_number(r.get(c))) is None else v for c in ("tenure", "charge")]
            for r in batch
        ]
        np.testing.assert_array_equal(parse_numbers(batch, ["tenure", "charge"]), each)
    read = read_categories(rows, ["contract"])["contract"]
    assert [read.distinct[i] for i in read.rows] == [_category(r["contract"]) for r in rows]
    model = trained()
    probs, why = model.score_many(rows, top=3)
    single = np.array([model.predict_proba_one(r)[True] for r in rows])
    np.testing.assert_allclose(probs, single, rtol=1e-9)
    assert len(why) == len(rows)


def test_a_batch_of_features_is_each_row_featurised_on_its_own():
    model = trained()
    rows = [
        {"tenure": t, "charge": c, "contract": k}
        for t in MESSY_NUMBERS
        for c in (70.5, "", "12")
        for k in MESSY_CATEGORIES[:4]
    ]
    for i, row in enumerate(rows):  # blanks and odd cells become features of their own
        model.learn_one(row, i % 3 == 0)
    d = model.learner.dim
    batch = model.features.transform_many(rows, d)
    for r, row in enumerate(rows):
        one = np.zeros(d)
        idx, val = model.features.transform_one(row, grow=False)
        kept = [(i, v) for i, v in zip(idx, val, strict=True) if i < d]
        one[[i for i, _ in kept]] = [v for _, v in kept]
        np.testing.assert_allclose(batch[r], one, rtol=1e-12, err_msg=str(row))


def test_explanations_are_signed_and_follow_the_cause():
    model = trained()
    risky = {"tenure": 1, "charge": 70, "contract": "monthly", "plan": "a"}
    loyal = {"tenure": 70, "charge": 70, "contract": "2y", "plan": "a"}
    (risky_why, loyal_why) = model.explain_many([risky, loyal], top=2)
    assert {c.column for c in risky_why} == {"tenure", "contract"}
    assert all(c.contribution > 0 for c in risky_why)  # both push the risk up
    assert all(c.contribution < 0 for c in loyal_why)  # both pull it down
    assert risky_why[0].as_dict()["value"] in (1, "monthly")
    p_risky, p_loyal = model.predict_proba_many([risky, loyal])
    assert p_risky > 0.6 > 0.2 > p_loyal


def test_checkpoint_round_trip_and_refusal_of_another_format():
    model = trained(300)
    data = model.to_bytes({"roc_auc": 0.8})
    restored, stored = ChurnModel.from_bytes(data)
    rows, _ = synthetic(20, seed=5)
    np.testing.assert_array_equal(restored.predict_proba_many(rows), model.predict_proba_many(rows))
    assert [c.as_dict() for c in restored.explain_one(rows[0])] == [
        c.as_dict() for c in model.explain_one(rows[0])
    ]
    assert stored == {"roc_auc": 0.8}
    # it goes on learning exactly as the original would
    for row, y in zip(*synthetic(50, seed=6), strict=True):
        model.learn_one(row, y)
        restored.learn_one(row, y)
    np.testing.assert_allclose(restored.predict_proba_many(rows), model.predict_proba_many(rows))
    with pytest.raises(
        IncompatibleCheckpoint, match=rf"format 0, this cxstream reads format {CHECKPOINT_FORMAT}"
    ):
        ChurnModel.from_bytes(data.replace(HEAD, b"cxstream-churn:0", 1))
    with pytest.raises(IncompatibleCheckpoint, match="not a cxstream churn-model checkpoint"):
        ChurnModel.from_bytes(b"something else entirely")


class _Boom:
    ran = False

    def __reduce__(self):
        return (_Boom.mark, ())

    @staticmethod
    def mark():
        _Boom.ran = True


def test_a_checkpoint_is_data_never_code():
    payload = pickle.dumps({"model": _Boom(), "metrics": {}})
    for head in (b"cxstream-churn:1\n", HEAD + b"\n", HEAD + b"\nunsigned\n"):
        with pytest.raises(IncompatibleCheckpoint):
            ChurnModel.from_bytes(head + payload)
    assert not _Boom.ran
    body = trained(50).to_bytes().split(b"\n", 2)[2]
    assert json.loads(body)["dim"] > 0  # plain JSON


def test_a_checkpoint_is_authenticated_by_the_key():
    model = trained(100)
    data = model.to_bytes({"revision": 3.0}, key=b"k" * 32)
    _, stored = ChurnModel.from_bytes(data, key=b"k" * 32)
    assert stored["revision"] == 3.0
    with pytest.raises(UntrustedCheckpoint, match="not authenticated"):
        ChurnModel.from_bytes(data, key=b"x" * 32)
    with pytest.raises(UntrustedCheckpoint):
        ChurnModel.from_bytes(model.to_bytes(), key=b"k" * 32)  # unsigned
    tampered = data.replace(b'"n_learned":100', b'"n_learned":101')
    assert tampered != data
    with pytest.raises(UntrustedCheckpoint):
        ChurnModel.from_bytes(tampered, key=b"k" * 32)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: {**s, "dim": s["dim"] + 1},
        lambda s: {**s, "mean": s["mean"][:-4]},
        lambda s: {**s, "features": {**s["features"], "owner": s["features"]["owner"][:-1]}},
        lambda s: {**s, "prior_variance": -1},
        lambda s: {**s, "extra": 1},
        lambda s: {**s, "metrics": {"deep": [[[[1]]]]}},
        lambda s: {**s, "mean": base64.b64encode(struct.pack("<d", math.inf) * s["dim"]).decode()},
    ],
)
def test_a_malformed_checkpoint_is_refused_with_a_reason(change):
    data = trained(60).to_bytes()
    head, mac, body = data.split(b"\n", 2)
    bad = json.dumps(change(json.loads(body))).encode()
    with pytest.raises(IncompatibleCheckpoint, match=r"checkpoint is (malformed|inconsistent)"):
        ChurnModel.from_bytes(head + b"\n" + mac + b"\n" + bad)


def test_deeply_nested_checkpoint_is_refused_not_a_crash():
    with pytest.raises(IncompatibleCheckpoint):
        ChurnModel.from_bytes(HEAD + b"\nunsigned\n" + b"[" * 100_000)


def test_learner_tracks_rolling_quality_and_flags_a_change():
    learner = ChurnLearner(ChurnModel(SCHEMA), QualityMonitor(window=300))
    rows, labels = synthetic(1500)
    for row, y in zip(rows, labels, strict=True):
        learner.learn_one(row, y)
    before = learner.quality.report()
    assert before["roc_auc"] > 0.7
    assert before["outcomes"] == 1500
    # the world flips: long-tenure customers now leave, short ones stay
    flipped = 0
    for row, y in zip(rows, labels, strict=True):
        _, drifted = learner.learn_one(row, not y)
        flipped += drifted
    assert flipped >= 1
    events = learner.take_events()
    assert "drift" in events
    assert {"challenger_promoted", "challenger_dropped"} & set(events)
    assert learner.take_events() == []
    data = learner.checkpoint()
    assert learner.revision == 1
    assert ChurnModel.from_bytes(data)[1]["revision"] == 1.0


def test_the_drift_response_recovers_faster_than_learning_alone():
    def after_flip(respond):
        learner = ChurnLearner(ChurnModel(SCHEMA), QualityMonitor(window=300))
        if not respond:
            learner.model.on_drift = lambda recent: None
        rows, labels = synthetic(1500)
        for row, y in zip(rows, labels, strict=True):
            learner.learn_one(row, y)
        for row, y in zip(rows, labels, strict=True):
            learner.learn_one(row, not y)
        return learner.quality.report()["log_loss"]

    assert after_flip(respond=True) < after_flip(respond=False)


def thresholds(n, seed=7):
    """Churn that a linear model cannot represent: many service calls, or a high charge together
    with an international plan, or a low charge without one; tenure is noise."""
    rng = random.Random(seed)
    rows, labels = [], []
    for _ in range(n):
        calls = rng.randint(0, 8)
        charge = rng.uniform(10, 100)
        intl = rng.random() < 0.2
        risky = calls >= 6 or (intl and charge > 70) or (not intl and charge < 25)
        y = rng.random() < (0.95 if risky else 0.03)
        rows.append(
            {
                "calls": calls,
                "charge": charge,
                "intl": "yes" if intl else "no",
                "tenure": rng.randint(0, 72),
            }
        )
        labels.append(y)
    return rows, labels


THRESHOLD_SCHEMA = Schema(numeric=("calls", "charge", "tenure"), categorical=("intl",))


def test_the_blend_captures_thresholds_and_interactions_the_linear_part_misses():
    from cxstream.evaluate.churn import roc_auc

    rows, labels = thresholds(3000)
    blend, linear = ChurnModel(THRESHOLD_SCHEMA), ChurnModel(THRESHOLD_SCHEMA, trees=None)
    for row, y in zip(rows, labels, strict=True):
        blend.learn_one(row, y)
        linear.learn_one(row, y)
    test_rows, test_labels = thresholds(1000, seed=8)
    auc_blend = roc_auc(test_labels, blend.predict_proba_many(test_rows))
    auc_linear = roc_auc(test_labels, linear.predict_proba_many(test_rows))
    assert auc_blend > auc_linear + 0.03
    assert blend.stacker.mean[2] > 0.3  # the stacker learned to trust the trees
    # a customer at risk only through the interaction: the reasons name charge and the plan
    why = blend.explain_one({"calls": 1, "charge": 95.0, "intl": "yes", "tenure": 30}, top=4)
    assert {c.column for c in why if c.contribution > 0.5} == {"charge", "intl"}
    # and one at risk through many calls is explained by the calls
    (first, *_) = blend.explain_one({"calls": 7, "charge": 30.0, "intl": "no", "tenure": 30})
    assert first.column == "calls" and first.contribution > 0


def test_path_contributions_add_up_to_the_trees_logit():
    model = ChurnModel(THRESHOLD_SCHEMA)
    for row, y in zip(*thresholds(1000), strict=True):
        model.learn_one(row, y)
    assert model.trees is not None
    x = model.encoder.encode_many(thresholds(50, seed=9)[0])
    leaves = model.trees.leaves(x)
    z = model.trees.logit(x)
    np.testing.assert_allclose(model.trees.logit_of(leaves), z, atol=1e-9)
    contributions = model.trees.contributions(leaves).sum(axis=1)
    np.testing.assert_allclose(contributions - contributions.mean(), z - z.mean(), atol=1e-9)
    assert model.trees.contributions(leaves[:0]).shape == (0, x.shape[1])


def test_refits_run_in_the_background_and_are_installed_when_done():
    from concurrent.futures import ThreadPoolExecutor

    model = ChurnModel(THRESHOLD_SCHEMA)
    with ThreadPoolExecutor(1) as pool:
        model.background = pool
        for row, y in zip(*thresholds(600), strict=True):
            model.learn_one(row, y)
        model.wait_for_refit(timeout=60)
    assert model.trees is not None
    assert "refit" in model.events
    # the executor is the process's, not the model's state: a copy drops it
    clone = pickle.loads(pickle.dumps(model))
    assert clone.background is None
    rows = thresholds(20, seed=10)[0]
    np.testing.assert_array_equal(clone.predict_proba_many(rows), model.predict_proba_many(rows))


def test_a_checkpoint_carries_the_trees_the_stacker_and_the_window():
    model = ChurnModel(THRESHOLD_SCHEMA)
    for row, y in zip(*thresholds(800), strict=True):
        model.learn_one(row, y)
    restored, _ = ChurnModel.from_bytes(model.to_bytes())
    assert restored.trees is not None
    np.testing.assert_array_equal(restored.stacker.mean, model.stacker.mean)
    assert restored.window.count == model.window.count == 800
    rows = thresholds(30, seed=11)[0]
    np.testing.assert_array_equal(restored.predict_proba_many(rows), model.predict_proba_many(rows))
    # the next refit is the same on both: same window, same schedule
    for row, y in zip(*thresholds(300, seed=12), strict=True):
        model.learn_one(row, y)
        restored.learn_one(row, y)
    np.testing.assert_allclose(restored.predict_proba_many(rows), model.predict_proba_many(rows))


def test_a_checkpoint_with_a_tree_model_that_does_not_parse_is_refused():
    model = ChurnModel(THRESHOLD_SCHEMA)
    for row, y in zip(*thresholds(400), strict=True):
        model.learn_one(row, y)
    data = model.to_bytes()
    head, mac, body = data.split(b"\n", 2)
    state = json.loads(body)
    state["trees"]["model"] = "tree\nversion=v4\nnum_class=1\nmax_feature_idx=1\n"
    with pytest.raises(IncompatibleCheckpoint, match="inconsistent"):
        ChurnModel.from_bytes(head + b"\n" + mac + b"\n" + json.dumps(state).encode())


def test_the_stacker_refit_stays_bounded_on_collinear_overconfident_inputs():
    from cxstream.detectors.churn_trees import _logistic_posterior

    rng = np.random.default_rng(0)
    z = rng.normal(0, 8, 3000)  # two parts that say the same, overconfidently, on a weak signal
    y = (rng.random(3000) < 1 / (1 + np.exp(-0.05 * z))).astype(float)
    f = np.column_stack([np.ones(3000), z, z + rng.normal(0, 0.01, 3000)])
    mean, cov = _logistic_posterior(f, y)
    assert np.isfinite(mean).all() and np.isfinite(cov).all()
    assert np.abs(mean).max() < 5
    assert abs(mean[1] + mean[2] - 0.05) < 0.05  # the blend learns how little the parts know


def test_the_largest_float_as_a_no_value_sentinel_is_read_as_missing():
    # some exports write a missing number as the largest float: learned as a number, its square
    # overflows the running variance and every prediction after it is NaN
    assert parse_number(1.7976931348623157e308) is None
    assert parse_number("-1.7976931348623157e308") is None
    assert parse_number(1e150) == 1e150
    cells = [{"tenure": v} for v in [1.7976931348623157e308, "1e300", 3, "4"] * 10]
    assert np.isnan(parse_numbers(cells, ["tenure"])[:2, 0]).all()
    model = ChurnModel(SCHEMA)
    rows, labels = synthetic(600)
    for i, (row, y) in enumerate(zip(rows, labels, strict=True)):
        if i % 7 == 0:
            row = {**row, "charge": 1.7976931348623157e308}
        assert 0.0 <= model.predict_proba_one(row)[True] <= 1.0
        model.learn_one(row, y)
    model.wait_for_refit()
    probs, why = model.score_many(rows[:100])
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
    assert all(math.isfinite(c.contribution) for reasons in why for c in reasons)


@given(
    cells=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.integers(min_value=-(10**400), max_value=10**400),
            st.sampled_from(["1e308", "-1e400", "inf", "nan", "", "NA", "x"]),
        ),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=15, deadline=None)
def test_any_numbers_leave_every_prediction_a_probability(cells):
    model = ChurnModel(SCHEMA)
    rows, labels = synthetic(260)  # past the trees' first fit at 200 labelled rows
    for i, (row, y) in enumerate(zip(rows, labels, strict=True)):
        row = {**row, "charge": cells[i % len(cells)]}
        assert 0.0 <= model.predict_proba_one(row)[True] <= 1.0
        model.learn_one(row, y)
    model.wait_for_refit()
    batch = [{**row, "charge": cells[i % len(cells)]} for i, row in enumerate(rows[:40])]
    probs, _ = model.score_many(batch)
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
