-- The baseline's scored answers per run x item (x seed where the baseline has one; usually NULL): what every condition is compared with.
SELECT run_id, benchmark, item_id, seed, CAST(correct AS INTEGER) AS correct
FROM prediction_units
WHERE condition = 'baseline' AND mode = 'baseline' AND correct IS NOT NULL
