-- Per run x benchmark x family x generator: the run's thoughts, ok and failed, with their mean PSNR, SSIM and generation seconds (each thought's share of its generator call), so that fidelity_by_family reads a few rows instead of joining every thought of the run.
SELECT
    r.run_id,
    t.benchmark,
    t.family,
    t.generator,
    count(*) FILTER (WHERE t.status = 'ok') AS thoughts_ok,
    count(*) FILTER (WHERE t.status = 'failed') AS thoughts_failed,
    avg(t.psnr) AS mean_psnr_db,
    avg(t.ssim) AS mean_ssim,
    avg(t.gen_seconds) AS mean_gen_seconds,
    sum(t.gen_seconds) AS total_gen_seconds
FROM run_thoughts r
JOIN stg_thoughts t ON t.thought_id = r.thought_id  -- no degrade variant needed: skip its JSON parsing
GROUP BY ALL
