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
