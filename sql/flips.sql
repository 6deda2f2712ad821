-- Which items does imagining fix or break? Per benchmark x condition x mode (x degrade), over the items paired with the baseline: wrong made right (fixed), right made wrong (broken); an item is right when most of its paired seeds are.
SELECT
    run_id, benchmark, condition, mode, degrade_kind, degrade_strength,
    n_paired AS n_items,
    fixed,
    broken,
    both_right,
    both_wrong,
    fixed - broken AS net_fixed,
    n_paired,
    n_missing
FROM paired_gains
WHERE run_id = $run_id
ORDER BY run_id, benchmark, condition, mode, degrade_kind, degrade_strength NULLS FIRST;
