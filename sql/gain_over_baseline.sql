-- Does imagining help? Accuracy per benchmark x condition x mode over the items paired with the baseline, its gain over baseline (percentage points), and the items missing and why (undegraded thoughts).
WITH baseline AS (
    SELECT
        p.run_id,
        p.benchmark,
        count(DISTINCT p.item_id) FILTER (WHERE p.correct IS NOT NULL) AS n_scored,
        count(DISTINCT p.item_id) FILTER (WHERE p.correct IS NULL) AS n_not_scored,
        avg(CAST(p.correct AS INTEGER)) AS accuracy
    FROM prediction_units p
    WHERE p.run_id = $run_id AND p.condition = 'baseline' AND p.mode = 'baseline'
    GROUP BY ALL
)
SELECT
    run_id,
    benchmark,
    'baseline' AS condition,
    'baseline' AS mode,
    n_scored AS n,
    round(100 * accuracy, 2) AS accuracy_pct,
    0.0 AS gain_pp,
    round(100 * accuracy, 2) AS baseline_pct,
    n_scored AS n_paired,
    n_not_scored AS n_missing,
    0 AS missing_failed_plan,
    0 AS missing_failed_thought,
    0 AS missing_quarantined,
    n_not_scored AS missing_not_scored,
    0 AS missing_no_baseline,
    0 AS n_partial
FROM baseline
UNION ALL
SELECT
    run_id,
    benchmark,
    condition,
    mode,
    n_paired AS n,
    round(100 * accuracy, 2) AS accuracy_pct,
    round(100 * gain, 2) AS gain_pp,
    round(100 * baseline_accuracy, 2) AS baseline_pct,
    n_paired,
    n_missing,
    missing_failed_plan,
    missing_failed_thought,
    missing_quarantined,
    missing_not_scored,
    missing_no_baseline,
    n_partial
FROM paired_gains
WHERE run_id = $run_id AND degrade_kind = 'none'
ORDER BY run_id, benchmark, (condition = 'baseline') DESC, condition, mode;
