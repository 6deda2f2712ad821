-- Does imagining help on each benchmark's own metric? Official metrics per benchmark x condition x mode, with the gain over baseline ('not computed' where a required judge was missing).
WITH m AS (
    SELECT run_id, benchmark, condition, mode, metric, value, n, unit, status
    FROM metrics
    WHERE metric NOT IN ('accuracy', 'unparsed_rate', 'judge_fallback')
),
base AS (
    SELECT run_id, benchmark, metric, value AS baseline_value
    FROM m
    WHERE condition = 'baseline' AND mode = 'baseline'
)
SELECT
    m.run_id,
    m.benchmark,
    m.metric,
    m.condition,
    m.mode,
    m.unit,
    m.n,
    CASE WHEN m.status = 'ok' THEN CAST(round(m.value, 4) AS VARCHAR) ELSE 'not computed' END AS value,
    CASE WHEN m.status = 'ok' AND b.baseline_value IS NOT NULL
         THEN round(m.value - b.baseline_value, 4) END AS gain
FROM m
LEFT JOIN base b USING (run_id, benchmark, metric)
ORDER BY m.run_id, m.benchmark, m.metric, (m.condition = 'baseline') DESC, m.condition, m.mode;
