-- Which edit family helps on which kind of question? Accuracy and gain over baseline per benchmark x category x family x mode over the paired items (undegraded template families; paired seeds averaged per item), with the items missing.
WITH rows AS (
    SELECT run_id, benchmark, item_id, condition, mode, degrade_kind, score, baseline_score, false AS missing
    FROM paired_items
    WHERE run_id = $run_id
    UNION ALL
    SELECT run_id, benchmark, item_id, condition, mode, degrade_kind, NULL, NULL, true
    FROM missing_items
    WHERE run_id = $run_id AND NOT partly_paired
)
SELECT
    r.run_id,
    r.benchmark,
    coalesce(it.category, '(none)') AS category,
    r.condition AS family,
    r.mode,
    count(*) FILTER (WHERE NOT r.missing) AS n_items,
    round(100 * avg(r.baseline_score), 2) AS baseline_pct,
    round(100 * avg(r.score), 2) AS accuracy_pct,
    round(100 * avg(r.score - r.baseline_score), 2) AS gain_pp,
    count(*) FILTER (WHERE r.missing) AS n_missing
FROM rows r
LEFT JOIN stg_items it ON it.benchmark = r.benchmark AND it.item_id = r.item_id
WHERE r.condition NOT IN ('baseline', 'self', 'planner') AND r.degrade_kind = 'none'
GROUP BY ALL
ORDER BY r.run_id, r.benchmark, category, r.mode, gain_pp DESC NULLS LAST, family;
