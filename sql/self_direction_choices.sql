-- Which family does the model choose when it decides what to imagine? Chosen-family counts and shares per benchmark x source (self | planner); parse-failed plans count as '(none)'.
WITH t AS (
    -- thoughts; chosen_family and plan_status read as NULL on warehouses loaded before they existed
    SELECT * FROM thoughts
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS chosen_family, NULL::VARCHAR AS plan_status WHERE false
),
run_thoughts AS (
    -- a run's thoughts: those it answered with, and those quarantined (a parse-failed plan has no image)
    SELECT run_id, thought_id FROM predictions WHERE thought_id IS NOT NULL
    UNION
    SELECT run_id, json_extract_string(record, '$.thought_id') FROM quarantine
    WHERE stage = 'predictions' AND json_valid(record)
),
choices AS (
    SELECT
        r.run_id,
        t.benchmark,
        t.thought_id,
        t.prompt_source AS source,
        coalesce(t.chosen_family, '(none)') AS chosen_family,
        t.plan_status
    FROM run_thoughts r
    JOIN t ON t.thought_id = r.thought_id
    WHERE t.prompt_source IN ('self', 'planner')
)
SELECT
    run_id,
    benchmark,
    source,
    chosen_family,
    count(*) AS n_choices,
    round(100 * count(*) / sum(count(*)) OVER (PARTITION BY run_id, benchmark, source), 2) AS share_pct,
    count(*) FILTER (WHERE plan_status = 'parse_failed') AS parse_failed
FROM choices
GROUP BY run_id, benchmark, source, chosen_family
ORDER BY run_id, benchmark, source, n_choices DESC, chosen_family;
