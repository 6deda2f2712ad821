-- Per run x benchmark x condition: the thoughts the run answered with and their generation seconds (each thought's share of its generator call), as sums so that benchmarks pool.
SELECT
    p.run_id,
    p.benchmark,
    p.condition AS family,
    count(*) AS n_thoughts,
    count(t.gen_seconds) AS n_timed,
    sum(t.gen_seconds) AS total_gen_seconds
FROM (SELECT DISTINCT run_id, benchmark, condition, thought_id FROM stg_predictions WHERE thought_id IS NOT NULL) p
LEFT JOIN stg_thoughts t ON t.thought_id = p.thought_id
GROUP BY ALL
