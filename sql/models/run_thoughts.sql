-- Which thoughts each run used: those it answered with, and those its quarantine names (a failed thought or plan has no prediction).
SELECT run_id, thought_id FROM stg_predictions WHERE thought_id IS NOT NULL
UNION
SELECT run_id, json_extract_string(record, '$.thought_id') AS thought_id
FROM stg_quarantine
WHERE stage = 'predictions' AND json_valid(record) AND json_extract_string(record, '$.thought_id') IS NOT NULL
