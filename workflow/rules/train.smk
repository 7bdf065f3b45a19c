# Training (resumable): checkpoints live outside the declared outputs, in
# results/{dataset}/checkpoints/{variant}/seed{seed}/, so a killed job restarts from its last checkpoint.


rule train_model:
    input:
        clips=lambda wc: clip_shards(wc.dataset, "train"),
        # the pseudo-label shards only for variants whose L_DFP reads them (not baseline, no-dfp, baseline-sv)
        labels=lambda wc: pseudolabel_shards(wc.dataset, "train") if uses_pseudolabels(wc.dataset, wc.variant) else [],
    output:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        losses="results/{dataset}/models/{variant}/seed{seed}/losses.csv",
        steps="results/{dataset}/models/{variant}/seed{seed}/steps.csv",
    params:
        model_config=lambda wc: model_config(wc.dataset, wc.variant),
        train_config=lambda wc: train_config(wc.dataset, wc.variant, wc.seed),
        ckpt_dir="results/{dataset}/checkpoints/{variant}/seed{seed}",
    threads: config["train"]["threads"]
    resources:
        gpu=1,
    log:
        "results/{dataset}/logs/train_model/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/train_model/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_model.py"
