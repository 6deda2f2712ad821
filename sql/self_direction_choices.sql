-- Which family does the model choose when it decides what to imagine? Chosen-family counts and shares per benchmark x source (self | planner) over the run's plans; parse-failed plans count as '(none)'.
WITH choices AS (
    SELECT
        r.run_id,
        t.benchmark,
        t.thought_id,
        t.prompt_source AS source,
        coalesce(t.chosen_family, '(none)') AS chosen_family,
        t.plan_status
    FROM run_thoughts r
    JOIN stg_thoughts t ON t.thought_id = r.thought_id  -- no degrade variant needed: skip its JSON parsing
    WHERE r.run_id = $run_id AND t.prompt_source IN ('self', 'planner')
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
