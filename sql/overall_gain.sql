-- Does imagining help overall? Macro-average over benchmarks per condition x mode of the paired accuracy and of the paired gain over baseline, with the items paired and missing (undegraded thoughts).
SELECT
    run_id,
    condition,
    mode,
    count(*) AS benchmarks,
    round(100 * avg(accuracy), 2) AS macro_accuracy_pct,
    round(100 * avg(gain), 2) AS gain_pp,
    round(100 * avg(baseline_accuracy), 2) AS macro_baseline_pct,
    sum(n_paired) AS n_paired,
    sum(n_missing) AS n_missing
FROM paired_gains
WHERE run_id = $run_id AND degrade_kind = 'none'
GROUP BY run_id, condition, mode
ORDER BY run_id, gain_pp DESC NULLS LAST, condition, mode;
