-- How faithful is each edit family's thought to its source image, and what did it cost? PSNR and SSIM per benchmark x family over the run's thoughts; mean_gen_seconds is each thought's share of its generator call's device time (0 or empty for identity, which calls no generator).
SELECT
    run_id,
    benchmark,
    family,
    generator,
    thoughts_ok,
    thoughts_failed,
    round(mean_psnr_db, 2) AS mean_psnr_db,
    round(mean_ssim, 4) AS mean_ssim,
    round(mean_gen_seconds, 4) AS mean_gen_seconds,
    round(total_gen_seconds, 4) AS total_gen_seconds
FROM run_fidelity
WHERE run_id = $run_id
ORDER BY run_id, benchmark, family, generator;
