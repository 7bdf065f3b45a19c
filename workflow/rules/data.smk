# Raw data: download from the public upstream, or copy from the data mirror (offline machines).
# MUG and TIMIT are licensed: their rules read the user's copy (datasets.<name>.root) directly.


rule fetch_sprites_layers:
    output:
        directory("data/raw/sprites-lpc"),
    params:
        mirror=data_mirror(),
    priority: PREP_PRIORITY
    log:
        "results/sprites/logs/fetch_sprites_layers.log",
    benchmark:
        "results/sprites/benchmarks/fetch_sprites_layers.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/fetch_sprites_layers.py"


rule fetch_mnist:
    output:
        directory("data/raw/mnist"),
    params:
        mirror=data_mirror(),
    priority: PREP_PRIORITY
    log:
        "results/smmnist/logs/fetch_mnist.log",
    benchmark:
        "results/smmnist/benchmarks/fetch_mnist.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/fetch_mnist.py"


rule fetch_fsdd_recordings:
    output:
        directory("data/raw/fsdd"),
    params:
        mirror=data_mirror(),
    priority: PREP_PRIORITY
    log:
        "results/fsdd/logs/fetch_fsdd_recordings.log",
    benchmark:
        "results/fsdd/benchmarks/fetch_fsdd_recordings.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/fetch_fsdd_recordings.py"
