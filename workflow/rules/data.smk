# Raw data: download from the public upstream, or copy from the data mirror (offline machines).


rule fetch_sprites_layers:
    output:
        directory("data/raw/sprites-lpc"),
    params:
        mirror=data_mirror(),
    log:
        "results/sprites/logs/fetch_sprites_layers.log",
    benchmark:
        "results/sprites/benchmarks/fetch_sprites_layers.tsv"
    script:
        "../scripts/fetch_sprites_layers.py"
