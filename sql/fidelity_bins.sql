-- Does generative fidelity bound the gain? Per-thought gain over the item's baseline in PSNR quartiles (ntile 4, ties by thought_id) per mode; the identity control is left out (its PSNR is the cap).
WITH baseline AS (
    SELECT run_id, benchmark, item_id, avg(CAST(correct AS INTEGER)) AS baseline_score
    FROM predictions
    WHERE condition = 'baseline' AND mode = 'baseline' AND correct IS NOT NULL
    GROUP BY ALL
),
thought_gain AS (
    SELECT
        p.run_id,
        p.mode,
        p.thought_id,
        t.psnr,
        t.ssim,
        avg(CAST(p.correct AS INTEGER)) - b.baseline_score AS gain
    FROM predictions p
    JOIN thoughts t ON t.thought_id = p.thought_id
    JOIN baseline b ON b.run_id = p.run_id AND b.benchmark = p.benchmark AND b.item_id = p.item_id
    WHERE p.correct IS NOT NULL AND t.psnr IS NOT NULL AND p.condition <> 'identity'
    GROUP BY p.run_id, p.mode, p.thought_id, t.psnr, t.ssim, b.baseline_score
),
binned AS (
    SELECT *, ntile(4) OVER (PARTITION BY run_id, mode ORDER BY psnr, thought_id) AS psnr_bin
    FROM thought_gain
)
SELECT
    run_id,
    mode,
    psnr_bin,
    count(*) AS n_thoughts,
    round(min(psnr), 2) AS psnr_low,
    round(max(psnr), 2) AS psnr_high,
    round(avg(ssim), 4) AS mean_ssim,
    round(100 * avg(gain), 2) AS gain_pp
FROM binned
GROUP BY ALL
ORDER BY run_id, mode, psnr_bin;
