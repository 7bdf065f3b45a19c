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
    wildcard_constraints:
        variant=one_of(list(config["variants"])),  # the comparison systems below have rules of their own
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    priority: job_priority
    log:
        "results/{dataset}/logs/train_model/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/train_model/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_model.py"


# The paper's comparison systems (not S3VAE variants): MoCoGAN for Table 1, MonkeyNet for Fig. 4, FHVAE for
# Table 3.
rule train_mocogan:
    input:
        clips=lambda wc: clip_shards(wc.dataset, "train"),
    output:
        model="results/{dataset}/models/mocogan/seed{seed}/model.pt",
    params:
        configs=lambda wc: configs.mocogan_configs(config, wc.dataset, wc.seed),
        ckpt_dir="results/{dataset}/checkpoints/mocogan/seed{seed}",
    wildcard_constraints:
        dataset=one_of(VIDEO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    priority: job_priority
    log:
        "results/{dataset}/logs/train_mocogan/seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/train_mocogan/seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_mocogan.py"


# MonkeyNet: Fig. 4's motion-transfer system (swap.csv and the Fig. 4 panel; no Table 1 row).
rule train_monkeynet:
    input:
        clips=lambda wc: clip_shards(wc.dataset, "train"),
    output:
        model="results/{dataset}/models/monkeynet/seed{seed}/model.pt",
    params:
        configs=lambda wc: configs.monkeynet_configs(config, wc.dataset, wc.seed),
        ckpt_dir="results/{dataset}/checkpoints/monkeynet/seed{seed}",
    wildcard_constraints:
        dataset=one_of(VIDEO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    priority: job_priority
    log:
        "results/{dataset}/logs/train_monkeynet/seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/train_monkeynet/seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_monkeynet.py"


rule train_fhvae:
    input:
        clips=lambda wc: clip_shards(wc.dataset, "train"),
    output:
        model="results/{dataset}/models/fhvae/seed{seed}/model.pt",
    params:
        configs=lambda wc: configs.fhvae_configs(config, wc.dataset, wc.seed),
        ckpt_dir="results/{dataset}/checkpoints/fhvae/seed{seed}",
    wildcard_constraints:
        dataset=one_of(AUDIO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    priority: job_priority
    log:
        "results/{dataset}/logs/train_fhvae/seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/train_fhvae/seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_fhvae.py"
