-- Per run x item x condition x mode x degrade with some unpaired answer: the first reason (plan, thought, quarantine, not scored, baseline) and whether other seeds of it are paired.
WITH per_item AS (
    SELECT
        run_id, benchmark, item_id, condition, mode, degrade_kind, degrade_strength,
        arg_min(reason, list_position(
            ['failed_plan', 'failed_thought', 'quarantined', 'not_scored', 'no_baseline'], reason)) AS reason,
        count(*) AS n_units
    FROM missing_units
    GROUP BY ALL
)
SELECT
    m.*,
    EXISTS (
        SELECT 1 FROM paired_items p
        WHERE p.run_id = m.run_id AND p.benchmark = m.benchmark AND p.item_id = m.item_id
          AND p.condition = m.condition AND p.mode = m.mode AND p.degrade_kind = m.degrade_kind
          AND p.degrade_strength IS NOT DISTINCT FROM m.degrade_strength
    ) AS partly_paired
FROM per_item m
