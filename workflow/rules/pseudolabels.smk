# Pseudo-label stages (paper §4.2). Each is its own rule writing its own shards, so that
# `snakemake --forcerun compute_flow_labels` recomputes only the labels and what depends on them.


rule compute_flow_labels:
    input:
        "results/{dataset}/shards/{split}_{shard}.h5",
    output:
        "results/{dataset}/pseudolabels/flow/{split}_{shard}.h5",
    params:
        method=config["pseudolabels"]["flow"]["method"],
        grid=config["pseudolabels"]["flow"]["grid"],
        topk=config["pseudolabels"]["flow"]["topk"],
    log:
        LOGS + "/compute_flow_labels/{split}_{shard}.log",
    benchmark:
        BENCH + "/compute_flow_labels/{split}_{shard}.tsv"
    script:
        "../scripts/compute_flow_labels.py"
