# Pseudo-label stages (paper §4.2). Each is its own rule writing its own shards, row-aligned with the
# clip shards, so that `snakemake --forcerun compute_flow_labels` recomputes only those labels and
# what depends on them.


rule compute_flow_labels:
    input:
        "results/{dataset}/shards/{split}_{shard}.h5",
    output:
        "results/{dataset}/pseudolabels/flow/{split}_{shard}.h5",
    params:
        flow=config["pseudolabels"]["flow"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    priority: PREP_PRIORITY
    log:
        "results/{dataset}/logs/compute_flow_labels/{split}_{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/compute_flow_labels/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/compute_flow_labels.py"


rule compute_landmark_labels:
    input:
        "results/{dataset}/shards/{split}_{shard}.h5",
    output:
        "results/{dataset}/pseudolabels/landmarks/{split}_{shard}.h5",
    params:
        landmarks=config["pseudolabels"]["landmarks"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    priority: PREP_PRIORITY
    log:
        "results/{dataset}/logs/compute_landmark_labels/{split}_{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/compute_landmark_labels/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/compute_landmark_labels.py"


rule compute_silence_labels:
    input:
        "results/{dataset}/shards/{split}_{shard}.h5",
    output:
        "results/{dataset}/pseudolabels/silence/{split}_{shard}.h5",
    params:
        silence=config["pseudolabels"]["silence"],
    wildcard_constraints:
        dataset=one_of(AUDIO),
    priority: PREP_PRIORITY
    log:
        "results/{dataset}/logs/compute_silence_labels/{split}_{shard}.log",
    benchmark:
        "results/{dataset}/benchmarks/compute_silence_labels/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/compute_silence_labels.py"
