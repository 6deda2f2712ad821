-- Per run x mode x family (each family and ALL, the identity control left out) x fidelity measure (psnr, ssim, embed): Spearman's rho between the measure and the per-thought gain (Pearson r of average ranks, over thoughts with both), n and whether either side is constant.
WITH scored AS (
    SELECT run_id, mode, condition AS family, psnr, ssim, embed_sim, gain FROM thought_gains WHERE psnr_bin IS NOT NULL
),
pooled AS (
    SELECT * FROM scored
    UNION ALL
    SELECT run_id, mode, 'ALL' AS family, psnr, ssim, embed_sim, gain FROM scored
),
measures AS (
    SELECT run_id, mode, family, 'psnr' AS measure, psnr AS x, gain AS y FROM pooled
    UNION ALL
    SELECT run_id, mode, family, 'ssim', ssim, gain FROM pooled WHERE ssim IS NOT NULL
    UNION ALL
    SELECT run_id, mode, family, 'embed', embed_sim, gain FROM pooled WHERE embed_sim IS NOT NULL
),
ranked AS (
    -- average rank of ties: rank() + (ties - 1) / 2
    SELECT
        run_id, mode, family, measure, x, y,
        rank() OVER (PARTITION BY run_id, mode, family, measure ORDER BY x)
            + (count(*) OVER (PARTITION BY run_id, mode, family, measure, x) - 1) / 2 AS rx,
        rank() OVER (PARTITION BY run_id, mode, family, measure ORDER BY y)
            + (count(*) OVER (PARTITION BY run_id, mode, family, measure, y) - 1) / 2 AS ry
    FROM measures
    WHERE isfinite(x) AND isfinite(y)
)
SELECT
    run_id, mode, family, measure,
    count(*) AS n,
    corr(rx, ry) AS rho,
    min(x) = max(x) OR min(y) = max(y) AS constant
FROM ranked
GROUP BY ALL
