-- How faithful is each edit family's thought to its source image? PSNR and SSIM per benchmark x family.
SELECT
    benchmark,
    family,
    generator,
    count(*) FILTER (WHERE status = 'ok') AS thoughts_ok,
    count(*) FILTER (WHERE status = 'failed') AS thoughts_failed,
    round(avg(psnr), 2) AS mean_psnr_db,
    round(avg(ssim), 4) AS mean_ssim,
    round(avg(gen_seconds), 4) AS mean_gen_seconds
FROM thoughts
GROUP BY benchmark, family, generator
ORDER BY benchmark, family, generator;
