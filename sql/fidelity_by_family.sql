-- How faithful is each edit family's thought to its source image, and what did it cost? PSNR and SSIM per benchmark x family over the run's thoughts; mean_gen_seconds is each thought's share of its generator call's device time (0 or empty for identity, which calls no generator).
SELECT
    r.run_id,
    t.benchmark,
    t.family,
    t.generator,
    count(*) FILTER (WHERE t.status = 'ok') AS thoughts_ok,
    count(*) FILTER (WHERE t.status = 'failed') AS thoughts_failed,
    round(avg(t.psnr), 2) AS mean_psnr_db,
    round(avg(t.ssim), 4) AS mean_ssim,
    round(avg(t.gen_seconds), 4) AS mean_gen_seconds,
    round(sum(t.gen_seconds), 4) AS total_gen_seconds
FROM run_thoughts r
JOIN stg_thoughts t ON t.thought_id = r.thought_id  -- no degrade variant needed: skip its JSON parsing
WHERE r.run_id = $run_id
GROUP BY ALL
ORDER BY r.run_id, t.benchmark, t.family, t.generator;
