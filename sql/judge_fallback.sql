-- How many answers needed an LLM judge, and was one available? Judge-fallback counts per benchmark x condition x mode.
SELECT run_id, benchmark, condition, mode, CAST(value AS BIGINT) AS items_needing_judge, note
FROM stg_metrics
WHERE run_id = $run_id AND metric = 'judge_fallback'
ORDER BY run_id, benchmark, condition, mode;
