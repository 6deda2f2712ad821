-- Per run x benchmark x condition x mode x degrade: paired items and missing ones by reason, accuracy with the thought and at baseline on the paired items, the gain and the flips.
WITH rows AS (
    SELECT
        run_id, benchmark, condition, mode, degrade_kind, degrade_strength, score, baseline_score,
        CAST(NULL AS VARCHAR) AS reason, false AS partly_paired
    FROM paired_items
    UNION ALL
    SELECT
        run_id, benchmark, condition, mode, degrade_kind, degrade_strength, NULL, NULL, reason, partly_paired
    FROM missing_items
)
SELECT
    run_id, benchmark, condition, mode, degrade_kind, degrade_strength,
    count(*) FILTER (WHERE reason IS NULL) AS n_paired,
    count(*) FILTER (WHERE reason IS NOT NULL AND NOT partly_paired) AS n_missing,
    count(*) FILTER (WHERE reason = 'failed_plan' AND NOT partly_paired) AS missing_failed_plan,
    count(*) FILTER (WHERE reason = 'failed_thought' AND NOT partly_paired) AS missing_failed_thought,
    count(*) FILTER (WHERE reason = 'quarantined' AND NOT partly_paired) AS missing_quarantined,
    count(*) FILTER (WHERE reason = 'not_scored' AND NOT partly_paired) AS missing_not_scored,
    count(*) FILTER (WHERE reason = 'no_baseline' AND NOT partly_paired) AS missing_no_baseline,
    count(*) FILTER (WHERE partly_paired) AS n_partial,
    avg(baseline_score) AS baseline_accuracy,
    avg(score) AS accuracy,
    avg(score - baseline_score) AS gain,
    count(*) FILTER (WHERE baseline_score <= 0.5 AND score > 0.5) AS fixed,
    count(*) FILTER (WHERE baseline_score > 0.5 AND score <= 0.5) AS broken,
    count(*) FILTER (WHERE baseline_score > 0.5 AND score > 0.5) AS both_right,
    count(*) FILTER (WHERE baseline_score <= 0.5 AND score <= 0.5) AS both_wrong
FROM rows
GROUP BY ALL
