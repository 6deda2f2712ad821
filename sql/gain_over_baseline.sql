-- Does imagining help? Accuracy per benchmark x condition x mode and its gain over baseline (percentage points).
WITH acc AS (
    SELECT run_id, benchmark, condition, mode, value AS accuracy, n
    FROM metrics
    WHERE metric = 'accuracy'
),
base AS (
    SELECT run_id, benchmark, accuracy AS baseline_accuracy
    FROM acc
    WHERE condition = 'baseline' AND mode = 'baseline'
)
SELECT
    a.run_id,
    a.benchmark,
    a.condition,
    a.mode,
    a.n,
    round(100 * a.accuracy, 2) AS accuracy_pct,
    round(100 * (a.accuracy - b.baseline_accuracy), 2) AS gain_pp
FROM acc a
LEFT JOIN base b USING (run_id, benchmark)
ORDER BY a.run_id, a.benchmark, (a.condition = 'baseline') DESC, a.condition, a.mode;
