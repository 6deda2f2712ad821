-- Each benchmark's own (official) metrics per run x condition x mode with the baseline's value and the gain; aggregates of the suite's verdicts, not paired per item.
WITH m AS (
    SELECT run_id, benchmark, condition, mode, metric, value, n, unit, status
    FROM stg_metrics
    WHERE metric NOT IN ('accuracy', 'unparsed_rate', 'judge_fallback')
),
base AS (
    SELECT run_id, benchmark, metric, value AS baseline_value, n AS baseline_n, status AS baseline_status
    FROM m
    WHERE condition = 'baseline' AND mode = 'baseline'
)
SELECT
    m.*,
    b.baseline_value,
    b.baseline_n,
    CASE WHEN m.status = 'ok' AND b.baseline_status = 'ok' THEN m.value - b.baseline_value END AS gain
FROM m
LEFT JOIN base b USING (run_id, benchmark, metric)
