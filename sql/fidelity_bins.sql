-- Does generative fidelity bound the gain? Per-thought gain over the item's baseline (paired seeds) in PSNR quartiles (ntile 4, ties by thought_id) per mode; the identity control is left out (its PSNR is the cap).
SELECT
    run_id,
    mode,
    psnr_bin,
    count(*) AS n_thoughts,
    round(min(psnr), 2) AS psnr_low,
    round(max(psnr), 2) AS psnr_high,
    round(avg(ssim), 4) AS mean_ssim,
    round(100 * avg(gain), 2) AS gain_pp
FROM thought_gains
WHERE run_id = $run_id AND psnr_bin IS NOT NULL
GROUP BY ALL
ORDER BY run_id, mode, psnr_bin;
