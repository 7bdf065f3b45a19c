# Evaluation. Video: a judge trained on real clips with ground truth scores generated clips
# (Appendix C: Acc, IS, H(y|x), H(y)). Audio: speaker verification EER from z_f and from z_1:T (Table 3).


rule train_judge:
    input:
        train=lambda wc: clip_shards(wc.dataset, "train"),
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        judge="results/{dataset}/judge/judge.pt",
        metrics="results/{dataset}/judge/metrics.json",
    params:
        judge=lambda wc: {**config["judge"], **config.get("judge_overrides", {}).get(wc.dataset, {})},
        dataset=lambda wc: dataset_cfg(wc.dataset),
        ckpt_dir="results/{dataset}/checkpoints/judge",
    wildcard_constraints:
        dataset=one_of(VIDEO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    priority: judge_priority
    log:
        "results/{dataset}/logs/train_judge.log",
    benchmark:
        "results/{dataset}/benchmarks/train_judge.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/train_judge.py"


rule evaluate_model:
    input:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        judge="results/{dataset}/judge/judge.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        "results/{dataset}/eval/{variant}/seed{seed}.json",
    params:
        dataset=lambda wc: dataset_cfg(wc.dataset),
        evaluate=config["evaluate"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    log:
        "results/{dataset}/logs/evaluate_model/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/evaluate_model/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/evaluate_model.py"


rule evaluate_verification:
    input:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
        test_labels=lambda wc: pseudolabel_shards(wc.dataset, "test"),
    output:
        "results/{dataset}/eval/{variant}/seed{seed}.json",
    params:
        evaluate=config["evaluate"],
    wildcard_constraints:
        dataset=one_of(AUDIO),
    threads: config["train"]["threads"]
    resources:
        gpu=GPU_JOB,
    log:
        "results/{dataset}/logs/evaluate_verification/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/evaluate_verification/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/evaluate_verification.py"
