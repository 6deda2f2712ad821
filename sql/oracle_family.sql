-- Which family, if any, gets each item right? Per benchmark x mode over the items where every fixed family (undegraded template family) is paired: baseline and oracle accuracy (the best score any family reaches per item), the share of items some family gets right, how many families reach the best score, and the incomplete items by reason; `--detail` gives the per-item rows.
SELECT
    run_id,
    benchmark,
    mode,
    count(*) AS n_items,
    count(*) FILTER (WHERE complete) AS n_complete,
    round(100 * avg(baseline_score) FILTER (WHERE complete), 2) AS baseline_pct,
    round(100 * avg(oracle_score) FILTER (WHERE complete), 2) AS oracle_pct,
    round(100 * avg(oracle_score - baseline_score) FILTER (WHERE complete), 2) AS gain_pp,
    round(100 * avg(CAST(len(oracle_families) > 0 AS INTEGER)) FILTER (WHERE complete), 2) AS any_family_right_pct,
    round(avg(len(oracle_families)) FILTER (WHERE complete AND len(oracle_families) > 0), 2) AS mean_oracle_families,
    max(n_families_expected) AS n_families_expected,
    count(*) FILTER (WHERE NOT complete) AS n_incomplete,
    count(*) FILTER (WHERE NOT complete AND missing_reason = 'failed_plan') AS missing_failed_plan,
    count(*) FILTER (WHERE NOT complete AND missing_reason = 'failed_thought') AS missing_failed_thought,
    count(*) FILTER (WHERE NOT complete AND missing_reason = 'quarantined') AS missing_quarantined,
    count(*) FILTER (WHERE NOT complete AND missing_reason = 'not_scored') AS missing_not_scored,
    count(*) FILTER (WHERE NOT complete AND missing_reason = 'no_baseline') AS missing_no_baseline
FROM oracle_items
WHERE run_id = $run_id
GROUP BY ALL
ORDER BY run_id, benchmark, mode;
