# Clip shards: the dataset recipe -> HDF5 (frames uint8 (N,T,H,W,C), labels, split), one job per shard.


rule build_sprites_shards:
    input:
        layers="data/raw/sprites-lpc",
    output:
        "results/sprites/shards/{split}_{shard}.h5",
    params:
        n_shards=lambda wc: dataset_cfg("sprites")["n_shards"],
        n_characters=lambda wc: dataset_cfg("sprites")[f"{wc.split}_characters"],
        frame_size=lambda wc: dataset_cfg("sprites")["frame_size"],
    log:
        "results/sprites/logs/build_sprites_shards/{split}_{shard}.log",
    benchmark:
        "results/sprites/benchmarks/build_sprites_shards/{split}_{shard}.tsv"
    script:
        "../scripts/build_sprites_shards.py"
