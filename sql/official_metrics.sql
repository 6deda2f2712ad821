-- Does imagining help on each benchmark's own metric? Official metrics per benchmark x condition x mode, with the gain over baseline ('not computed' where a required judge was missing); each value aggregates its condition's own items (n), not paired ones.
SELECT
    run_id,
    benchmark,
    metric,
    condition,
    mode,
    unit,
    n,
    CASE WHEN status = 'ok' THEN CAST(round(value, 4) AS VARCHAR) ELSE 'not computed' END AS value,
    CASE WHEN status = 'ok' AND baseline_value IS NOT NULL THEN round(gain, 4) END AS gain,
    baseline_n
FROM official_gains
WHERE run_id = $run_id
ORDER BY run_id, benchmark, metric, (condition = 'baseline') DESC, condition, mode;
