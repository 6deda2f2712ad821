-- Per run x item x mode: the best score any fixed family (undegraded template family) reaches, the families reaching it, and whether every family of the cell is paired on the item (complete) or why not.
WITH fixed AS (
    SELECT * FROM paired_items
    WHERE condition NOT IN ('baseline', 'self', 'planner') AND degrade_kind = 'none'
),
fixed_missing AS (
    SELECT * FROM missing_items
    WHERE condition NOT IN ('baseline', 'self', 'planner') AND degrade_kind = 'none' AND NOT partly_paired
),
families AS (
    SELECT run_id, benchmark, mode, count(DISTINCT condition) AS n_families_expected
    FROM (SELECT run_id, benchmark, mode, condition FROM fixed
          UNION ALL SELECT run_id, benchmark, mode, condition FROM fixed_missing)
    GROUP BY ALL
),
items AS (
    SELECT DISTINCT run_id, benchmark, item_id, mode FROM fixed
    UNION
    SELECT DISTINCT run_id, benchmark, item_id, mode FROM fixed_missing
),
best AS (
    SELECT
        run_id, benchmark, item_id, mode,
        max(baseline_score) AS baseline_score,
        max(score) AS oracle_score,
        count(*) AS n_families
    FROM fixed
    GROUP BY ALL
),
winners AS (
    SELECT f.run_id, f.benchmark, f.item_id, f.mode, list(f.condition ORDER BY f.condition) AS oracle_families
    FROM fixed f
    JOIN best b USING (run_id, benchmark, item_id, mode)
    WHERE f.score = b.oracle_score AND b.oracle_score > 0
    GROUP BY ALL
),
why AS (
    SELECT run_id, benchmark, item_id, mode, arg_min(reason, list_position(
        ['failed_plan', 'failed_thought', 'quarantined', 'not_scored', 'no_baseline'], reason)) AS missing_reason
    FROM fixed_missing
    GROUP BY ALL
)
SELECT
    i.run_id,
    i.benchmark,
    i.item_id,
    i.mode,
    b.baseline_score,
    b.oracle_score,
    coalesce(w.oracle_families, []::VARCHAR[]) AS oracle_families,
    coalesce(b.n_families, 0) AS n_families,
    f.n_families_expected,
    coalesce(b.n_families, 0) = f.n_families_expected AS complete,
    y.missing_reason
FROM items i
JOIN families f USING (run_id, benchmark, mode)
LEFT JOIN best b USING (run_id, benchmark, item_id, mode)
LEFT JOIN winners w USING (run_id, benchmark, item_id, mode)
LEFT JOIN why y USING (run_id, benchmark, item_id, mode)
