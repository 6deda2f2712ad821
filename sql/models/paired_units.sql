-- Each scored condition answer with the baseline's scored answer on the same item and seed (a baseline without a seed pairs with every seed).
SELECT
    c.run_id,
    c.benchmark,
    c.item_id,
    c.condition,
    c.mode,
    c.degrade_kind,
    c.degrade_strength,
    c.seed,
    c.thought_id,
    CAST(c.correct AS INTEGER) AS treated,
    b.correct AS control
FROM prediction_units c
JOIN baseline_units b
  ON b.run_id = c.run_id AND b.benchmark = c.benchmark AND b.item_id = c.item_id
 AND (b.seed IS NULL OR b.seed = c.seed)
WHERE c.condition <> 'baseline' AND c.correct IS NOT NULL
