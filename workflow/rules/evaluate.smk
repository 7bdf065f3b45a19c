# Evaluation: a judge trained on real clips with ground truth; Appendix C metrics on generated clips.


rule train_judge:
    input:
        train=lambda wc: clip_shards(wc.dataset, "train"),
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        judge="results/{dataset}/judge/judge.pt",
        metrics="results/{dataset}/judge/metrics.json",
    params:
        judge=lambda wc: config["judge"],
        dataset=lambda wc: dataset_cfg(wc.dataset),
    threads: config["train"]["threads"]
    resources:
        gpu=1,
    log:
        LOGS + "/train_judge.log",
    benchmark:
        BENCH + "/train_judge.tsv"
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
    threads: config["train"]["threads"]
    resources:
        gpu=1,
    log:
        LOGS + "/evaluate_model/{variant}_seed{seed}.log",
    benchmark:
        BENCH + "/evaluate_model/{variant}_seed{seed}.tsv"
    script:
        "../scripts/evaluate_model.py"
