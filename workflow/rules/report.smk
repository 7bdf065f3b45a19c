# Tables: every number comes from the evaluation files of the pipeline.


rule make_table1:
    input:
        evals=lambda wc: expand(
            "results/{dataset}/eval/{variant}/seed{seed}.json",
            dataset=wc.dataset,
            variant=config["table1"]["rows"],
            seed=config["seeds"],
        ),
        judge="results/{dataset}/judge/metrics.json",
    output:
        "results/{dataset}/table1.csv",
    params:
        rows=config["table1"]["rows"],
        seeds=config["seeds"],
    log:
        LOGS + "/make_table1.log",
    benchmark:
        BENCH + "/make_table1.tsv"
    script:
        "../scripts/make_table1.py"


rule make_figures:
    input:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        swap="results/{dataset}/figures/{variant}_seed{seed}/swap.png",
        swap_gif="results/{dataset}/figures/{variant}_seed{seed}/swap.gif",
        fixed_static="results/{dataset}/figures/{variant}_seed{seed}/fixed_static.png",
        fixed_dynamic="results/{dataset}/figures/{variant}_seed{seed}/fixed_dynamic.png",
        samples="results/{dataset}/figures/{variant}_seed{seed}/samples.png",
    params:
        n=6,
        seed=config["evaluate"]["seed"],
    log:
        LOGS + "/make_figures/{variant}_seed{seed}.log",
    benchmark:
        BENCH + "/make_figures/{variant}_seed{seed}.tsv"
    script:
        "../scripts/make_figures.py"
