-- Which family, if any, gets each item right? The per-item rows behind oracle_family (`--detail`): per item x mode, baseline score, the best score a fixed family reaches (the oracle) and the families reaching it (undegraded template families paired with the baseline); complete = every family of the run is paired on the item.
SELECT
    run_id,
    benchmark,
    item_id,
    mode,
    baseline_score,
    oracle_score,
    array_to_string(oracle_families, ', ') AS oracle_families,
    len(oracle_families) AS n_oracle_families,
    n_families,
    n_families_expected,
    complete,
    missing_reason
FROM oracle_items
WHERE run_id = $run_id
ORDER BY run_id, benchmark, item_id, mode;
