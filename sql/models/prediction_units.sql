-- One row per prediction with its thought's degrade variant: where every score starts (correct NULL = not scored, with unscored_reason).
SELECT
    p.run_id,
    p.benchmark,
    p.item_id,
    p.condition,
    p.mode,
    p.seed,
    p.thought_id,
    coalesce(t.degrade_kind, 'none') AS degrade_kind,
    t.degrade_strength,
    p.correct,
    p.unscored_reason
FROM stg_predictions p
LEFT JOIN thought_variants t ON t.thought_id = p.thought_id
