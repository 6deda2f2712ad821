-- One row per thought: family, prompt source, status, error, fidelity, generation time (its share of its generator call) and degrade variant ('none' when undegraded).
SELECT
    thought_id,
    benchmark,
    item_id,
    family,
    prompt_source,
    generator,
    seed,
    status,
    error,
    plan_status,
    chosen_family,
    psnr,
    ssim,
    embed_sim,
    gen_seconds,
    coalesce(json_extract_string(generator_params, '$.degrade.kind'), 'none') AS degrade_kind,
    TRY_CAST(json_extract_string(generator_params, '$.degrade.strength') AS DOUBLE) AS degrade_strength
FROM stg_thoughts
