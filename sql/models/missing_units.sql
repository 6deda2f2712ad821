-- Condition answers (item x seed) that have no scored pair, with why: failed_plan, failed_thought, quarantined, not_scored or no_baseline.
WITH quarantined AS (
    SELECT
        q.run_id,
        q.benchmark,
        q.item_id,
        json_extract_string(q.record, '$.condition') AS condition,
        json_extract_string(q.record, '$.family') AS family,
        json_extract_string(q.record, '$.mode') AS mode,
        TRY_CAST(json_extract_string(q.record, '$.seed') AS BIGINT) AS seed,
        json_extract_string(q.record, '$.thought_id') AS thought_id,
        json_extract_string(q.record, '$.plan_status') AS plan_status
    FROM stg_quarantine q
    WHERE q.stage = 'predictions' AND json_valid(q.record)
),
edit_modes AS (
    -- a thought that never came applies to every edit mode of its run
    SELECT DISTINCT run_id, mode FROM (
        SELECT run_id, mode FROM prediction_units
        UNION ALL
        SELECT run_id, mode FROM quarantined
        UNION ALL
        SELECT run_id, unnest(from_json(json_extract(config_json, '$.modes'), '["VARCHAR"]')) AS mode
        FROM stg_runs WHERE json_valid(config_json) AND json_extract(config_json, '$.modes') IS NOT NULL
    ) WHERE mode IS NOT NULL AND mode <> 'baseline'
),
baseline_state AS (
    SELECT run_id, benchmark, item_id, bool_or(correct IS NOT NULL) AS scored
    FROM prediction_units
    WHERE condition = 'baseline' AND mode = 'baseline'
    GROUP BY ALL
),
baseline_quarantined AS (
    SELECT DISTINCT run_id, benchmark, item_id FROM quarantined WHERE condition = 'baseline'
),
answered AS (
    -- answers that are not scored, or whose item has no scored baseline for their seed
    SELECT
        c.run_id, c.benchmark, c.item_id, c.condition, c.mode, c.degrade_kind, c.degrade_strength, c.seed,
        CASE
            WHEN c.correct IS NULL THEN 'not_scored'
            WHEN bs.scored IS NOT NULL AND NOT bs.scored THEN 'not_scored'
            WHEN bq.item_id IS NOT NULL THEN 'quarantined'
            ELSE 'no_baseline'
        END AS reason
    FROM prediction_units c
    LEFT JOIN baseline_state bs ON bs.run_id = c.run_id AND bs.benchmark = c.benchmark AND bs.item_id = c.item_id
    LEFT JOIN baseline_quarantined bq
      ON bq.run_id = c.run_id AND bq.benchmark = c.benchmark AND bq.item_id = c.item_id
    WHERE c.condition <> 'baseline'
      AND (c.correct IS NULL OR NOT EXISTS (
          SELECT 1 FROM baseline_units b
          WHERE b.run_id = c.run_id AND b.benchmark = c.benchmark AND b.item_id = c.item_id
            AND (b.seed IS NULL OR b.seed = c.seed)))
),
answers_quarantined AS (
    -- a condition x mode answer kept out by the understanding stage or by validation
    SELECT
        q.run_id, q.benchmark, q.item_id, q.condition, q.mode,
        coalesce(t.degrade_kind, 'none') AS degrade_kind, t.degrade_strength, coalesce(q.seed, t.seed) AS seed,
        'quarantined' AS reason
    FROM quarantined q
    LEFT JOIN thought_variants t ON t.thought_id = q.thought_id
    WHERE q.condition IS NOT NULL AND q.condition <> 'baseline' AND q.mode IS NOT NULL
),
thoughts_missing AS (
    -- a thought (or its plan) that failed: no answer in any edit mode
    SELECT
        q.run_id, q.benchmark, q.item_id, q.family AS condition, m.mode,
        coalesce(t.degrade_kind, 'none') AS degrade_kind, t.degrade_strength, t.seed,
        CASE WHEN coalesce(q.plan_status, t.plan_status, 'ok') <> 'ok' THEN 'failed_plan' ELSE 'failed_thought' END
            AS reason
    FROM quarantined q
    JOIN edit_modes m ON m.run_id = q.run_id
    LEFT JOIN thought_variants t ON t.thought_id = q.thought_id
    WHERE q.family IS NOT NULL AND q.mode IS NULL
)
SELECT * FROM answered
UNION ALL
SELECT * FROM answers_quarantined
UNION ALL
SELECT * FROM thoughts_missing
