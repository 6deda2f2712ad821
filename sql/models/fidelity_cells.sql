-- Per run x mode x family (each family, ALL = every family but the identity control pooled) x PSNR bin x (treated, control): how many thoughts have that pair of scores, with their PSNR and SSIM sums; the cells fidelity_gain bootstraps over (the identity control has no bin).
WITH scored AS (
    SELECT run_id, mode, condition AS family, psnr_bin, treated, control, psnr, ssim
    FROM thought_gains
    WHERE psnr IS NOT NULL
),
cells AS (
    SELECT * FROM scored WHERE psnr_bin IS NOT NULL OR family = 'identity'
    UNION ALL
    SELECT run_id, mode, 'ALL' AS family, psnr_bin, treated, control, psnr, ssim FROM scored WHERE psnr_bin IS NOT NULL
)
SELECT
    run_id, mode, family, psnr_bin, treated, control,
    count(*) AS n_thoughts,
    min(psnr) AS psnr_low,
    max(psnr) AS psnr_high,
    sum(psnr) AS psnr_sum,
    sum(ssim) AS ssim_sum,
    count(ssim) AS n_ssim
FROM cells
GROUP BY ALL
