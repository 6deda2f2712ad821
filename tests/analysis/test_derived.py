"""Reports at scale: the per-run derived tables stay equal to the live views through loads, reloads and
migrations, and the statistics written without scipy/statsmodels (imported for a report they cost more than
it) give their numbers."""
from __future__ import annotations

import numpy as np
import polars as pl
import polars.selectors  # noqa: F401  (pl.selectors)
from polars.testing import assert_frame_equal
import pyarrow as pa
import pytest

from g2u_tasks.analysis import reports
from g2u_tasks.analysis import statistics as A
from g2u_tasks.warehouse import database as warehouse
from g2u_tasks.warehouse import views

from tests.analysis.test_paired import DE, RUN, SELF_RUN, _tables


def _arrow(tables: dict) -> dict[str, pa.Table]:
    return {name: pa.Table.from_pylist(rows, schema=warehouse.table_schema(name)) for name, rows in tables.items()}


def _assert_derived_equal_live(con) -> None:
    for name in views.DERIVED:
        nan_free = pl.selectors.float().fill_nan(None)  # NaN (a constant side's rho) never equals itself
        stored = con.sql(f"SELECT * FROM derived_{name}").pl().with_columns(nan_free)
        live = con.sql(views.model_sql(name)).pl().with_columns(nan_free)
        # floats to rounding: DuckDB's parallel sums may add in another order
        assert_frame_equal(stored.sort(pl.all()), live.sort(pl.all()), check_exact=False, rel_tol=1e-9)


@pytest.fixture()
def path(tmp_path):
    path = tmp_path / "w.duckdb"
    con = warehouse.connect(path)
    warehouse.load(con, _arrow(_tables()))
    con.close()
    return path


def test_derived_tables_follow_loads_and_reloads(path):
    con = warehouse.connect(path)
    _assert_derived_equal_live(con)
    assert set(con.sql("SELECT DISTINCT run_id FROM derived_paired_items").pl()["run_id"]) == {RUN, SELF_RUN}
    # a reloaded run: item 3 now right with detail_enhancement
    tables = _tables()
    preds = [{**p, "correct": True} if (p["run_id"], p["item_id"], p["condition"]) == (RUN, "3", DE) else p
             for p in tables["predictions"] if p["run_id"] == RUN]
    warehouse.load(con, _arrow({"predictions": preds}))
    _assert_derived_equal_live(con)
    # a reloaded thought whose status changes: the runs that used it are re-derived
    thoughts = [{**t, "status": "failed"} if t["thought_id"] == f"{DE}-0" else t for t in tables["thoughts"]]
    warehouse.load(con, _arrow({"thoughts": thoughts}))
    _assert_derived_equal_live(con)
    con.close()


def test_older_warehouse_is_answered_live_then_migrated(path):
    con = warehouse.connect(path, read_only=True)
    expected = reports.run_report(con, "gain_ci", RUN)
    con.close()
    con = warehouse.connect(path)
    con.execute(f"DROP TABLE {views.STATE}")  # as a warehouse made before the derived tables
    con.close()
    con = warehouse.connect(path, read_only=True)  # stale: TEMP views computed live, nothing written
    assert reports.run_report(con, "gain_ci", RUN).equals(expected)
    assert views.state(con) is None
    con.close()
    con = warehouse.connect(path)  # read-write: rebuilt
    assert views.state(con) is not None
    _assert_derived_equal_live(con)
    con.close()
    con = warehouse.connect(path, read_only=True)
    assert reports.run_report(con, "gain_ci", RUN).equals(expected)
    con.close()


def test_spearman_p_and_mcnemar_match_scipy_and_statsmodels():
    from scipy.stats import spearmanr
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(3)
    for n in (3, 5, 20, 200, 5000):
        for ties in (False, True):
            x = rng.integers(0, 4, n).astype(float) if ties else rng.normal(size=n)
            y = x * rng.uniform(0, 1) + rng.normal(size=n)
            ref = spearmanr(x, y)  # the reports take rho from SQL ranks and p from spearman_p
            assert A.spearman_p(float(ref.statistic), n) == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
    for fixed in range(0, 40, 3):
        for broken in range(0, 40, 4):
            if fixed + broken:
                ref = mcnemar([[0, broken], [fixed, 0]], exact=fixed + broken < A.EXACT_BELOW, correction=True).pvalue
                assert A.mcnemar_p(fixed, broken) == pytest.approx(float(ref), rel=1e-10)


def test_weighted_bootstrap_draws_as_items_one_by_one():
    diffs = np.random.default_rng(5).integers(-2, 3, 500) / 2
    values, counts = np.unique(diffs, return_counts=True)
    assert A.bootstrap_ci(values, weights=counts) == A.bootstrap_ci(diffs)
    treated, control = (diffs > 0).astype(float), (diffs < 0).astype(float)
    pairs, weights = np.unique(np.c_[treated, control], axis=0, return_counts=True)
    assert A.paired_summary(pairs[:, 0], pairs[:, 1], weights) == pytest.approx(A.paired_summary(treated, control))
