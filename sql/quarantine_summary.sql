-- What was kept out of the results, and why? Quarantined rows per run, stage, benchmark and reason.
SELECT run_id, stage, benchmark, item_id, reason
FROM stg_quarantine
WHERE run_id = $run_id
ORDER BY run_id, stage, benchmark, item_id;
