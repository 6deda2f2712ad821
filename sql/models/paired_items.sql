-- The unit of every gain: per run x item x condition x mode x degrade, the share right with the thought and at baseline over the same paired seeds.
SELECT
    run_id, benchmark, item_id, condition, mode, degrade_kind, degrade_strength,
    avg(treated) AS score,
    avg(control) AS baseline_score,
    count(*) AS n_seeds
FROM paired_units
GROUP BY ALL
