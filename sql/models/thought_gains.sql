-- Per run x thought x mode: its correctness minus the item's baseline over the same paired seeds, with the thought's fidelity and its PSNR quartile (ntile 4 per run x mode, ties by thought_id; null for the identity control, whose PSNR is the cap, and without a PSNR).
WITH gains AS (
    SELECT
        u.run_id,
        u.benchmark,
        u.item_id,
        u.condition,
        u.mode,
        u.degrade_kind,
        u.degrade_strength,
        u.thought_id,
        t.psnr,
        t.ssim,
        t.embed_sim,
        avg(u.treated) AS treated,
        avg(u.control) AS control,
        avg(u.treated - u.control) AS gain
    FROM paired_units u
    JOIN thought_variants t ON t.thought_id = u.thought_id
    GROUP BY ALL
)
SELECT
    *,
    CASE WHEN psnr IS NOT NULL AND condition <> 'identity' THEN ntile(4) OVER (
        PARTITION BY run_id, mode, psnr IS NOT NULL AND condition <> 'identity' ORDER BY psnr, thought_id) END
        AS psnr_bin
FROM gains
