-- Which edit family helps on which kind of question? Accuracy and gain over baseline per benchmark x category x family x mode (undegraded template families; seeds averaged per item).
WITH per_item AS (
    SELECT
        p.run_id,
        p.benchmark,
        p.item_id,
        p.condition,
        p.mode,
        avg(CAST(p.correct AS INTEGER)) AS score
    FROM predictions p
    LEFT JOIN thoughts t ON t.thought_id = p.thought_id
    WHERE p.correct IS NOT NULL
      AND p.condition NOT IN ('self', 'planner')
      AND json_extract_string(t.generator_params, '$.degrade') IS NULL
    GROUP BY ALL
),
baseline AS (
    SELECT run_id, benchmark, item_id, score AS baseline_score
    FROM per_item
    WHERE condition = 'baseline' AND mode = 'baseline'
)
SELECT
    f.run_id,
    f.benchmark,
    coalesce(it.category, '(none)') AS category,
    f.condition AS family,
    f.mode,
    count(*) AS n_items,
    round(100 * avg(b.baseline_score), 2) AS baseline_pct,
    round(100 * avg(f.score), 2) AS accuracy_pct,
    round(100 * avg(f.score - b.baseline_score), 2) AS gain_pp
FROM per_item f
JOIN baseline b USING (run_id, benchmark, item_id)
LEFT JOIN items it ON it.benchmark = f.benchmark AND it.item_id = f.item_id
WHERE f.condition <> 'baseline'
GROUP BY ALL
ORDER BY f.run_id, f.benchmark, category, f.mode, gain_pp DESC, family;
