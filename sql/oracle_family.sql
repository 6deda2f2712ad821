-- Which family, if any, gets each item right? Per item x mode: baseline score, the best score a fixed family reaches (the oracle) and the families reaching it (undegraded template families; seeds averaged per item).
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
),
families AS (
    SELECT *, max(score) OVER (PARTITION BY run_id, benchmark, item_id, mode) AS oracle_score
    FROM per_item
    WHERE condition <> 'baseline'
)
SELECT
    f.run_id,
    f.benchmark,
    f.item_id,
    f.mode,
    b.baseline_score,
    max(f.oracle_score) AS oracle_score,
    coalesce(string_agg(f.condition, ', ' ORDER BY f.condition)
             FILTER (WHERE f.score = f.oracle_score AND f.oracle_score > 0), '') AS oracle_families,
    count(*) FILTER (WHERE f.score = f.oracle_score AND f.oracle_score > 0) AS n_oracle_families,
    count(*) AS n_families
FROM families f
LEFT JOIN baseline b USING (run_id, benchmark, item_id)
GROUP BY f.run_id, f.benchmark, f.item_id, f.mode, b.baseline_score
ORDER BY f.run_id, f.benchmark, f.item_id, f.mode;
