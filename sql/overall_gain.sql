-- Does imagining help overall? Macro-average accuracy over benchmarks per condition x mode, and its gain over baseline.
WITH acc AS (
    SELECT run_id, benchmark, condition, mode, value AS accuracy
    FROM metrics
    WHERE metric = 'accuracy'
),
macro AS (
    SELECT run_id, condition, mode, avg(accuracy) AS accuracy, count(*) AS benchmarks
    FROM acc
    GROUP BY run_id, condition, mode
)
SELECT
    m.run_id,
    m.condition,
    m.mode,
    m.benchmarks,
    round(100 * m.accuracy, 2) AS macro_accuracy_pct,
    round(100 * (m.accuracy - b.accuracy), 2) AS gain_pp
FROM macro m
LEFT JOIN macro b ON b.run_id = m.run_id AND b.condition = 'baseline' AND b.mode = 'baseline'
ORDER BY m.run_id, gain_pp DESC NULLS LAST;
