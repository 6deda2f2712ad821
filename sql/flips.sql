-- Which items does imagining fix or break? Per benchmark x condition x mode (x degrade): items wrong at baseline made right (fixed) and right made wrong (broken); an item is right when most of its seeds are.
WITH per_item AS (
    SELECT
        p.run_id,
        p.benchmark,
        p.item_id,
        p.condition,
        p.mode,
        coalesce(json_extract_string(t.generator_params, '$.degrade.kind'), 'none') AS degrade_kind,
        TRY_CAST(json_extract_string(t.generator_params, '$.degrade.strength') AS DOUBLE) AS degrade_strength,
        avg(CAST(p.correct AS INTEGER)) > 0.5 AS is_right
    FROM predictions p
    LEFT JOIN thoughts t ON t.thought_id = p.thought_id
    WHERE p.correct IS NOT NULL
    GROUP BY ALL
),
baseline AS (
    SELECT run_id, benchmark, item_id, is_right AS baseline_right
    FROM per_item
    WHERE condition = 'baseline' AND mode = 'baseline'
)
SELECT
    i.run_id,
    i.benchmark,
    i.condition,
    i.mode,
    i.degrade_kind,
    i.degrade_strength,
    count(*) AS n_items,
    count(*) FILTER (WHERE NOT b.baseline_right AND i.is_right) AS fixed,
    count(*) FILTER (WHERE b.baseline_right AND NOT i.is_right) AS broken,
    count(*) FILTER (WHERE b.baseline_right AND i.is_right) AS both_right,
    count(*) FILTER (WHERE NOT b.baseline_right AND NOT i.is_right) AS both_wrong,
    count(*) FILTER (WHERE NOT b.baseline_right AND i.is_right)
        - count(*) FILTER (WHERE b.baseline_right AND NOT i.is_right) AS net_fixed
FROM per_item i
JOIN baseline b USING (run_id, benchmark, item_id)
WHERE i.condition <> 'baseline'
GROUP BY ALL
ORDER BY i.run_id, i.benchmark, i.condition, i.mode, i.degrade_kind, i.degrade_strength NULLS FIRST;
