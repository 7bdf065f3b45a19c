# Tables (every number from the pipeline's evaluation files, mean ± std over seeds), the comparison
# with the paper's values, and figures. Outputs marked report() go into `snakemake --report`.


def eval_files(dataset, rows):
    return expand(
        "results/{dataset}/eval/{variant}/seed{seed}.json",
        dataset=dataset,
        variant=implemented(rows),
        seed=config["seeds"],
    )


rule make_table1:
    input:
        evals=lambda wc: eval_files(wc.dataset, config["table1"]["rows"]),
        judge="results/{dataset}/judge/metrics.json",
    output:
        report(
            "results/{dataset}/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=config["table1"]["rows"],
        seeds=config["seeds"],
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        LOGS + "/make_table1.log",
    benchmark:
        BENCH + "/make_table1.tsv"
    script:
        "../scripts/make_table.py"


rule make_table2:
    input:
        evals=lambda wc: eval_files(wc.dataset, config["table2"]["rows"]),
        judge="results/{dataset}/judge/metrics.json",
    output:
        report(
            "results/{dataset}/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=config["table2"]["rows"],
        seeds=config["seeds"],
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        LOGS + "/make_table2.log",
    benchmark:
        BENCH + "/make_table2.tsv"
    script:
        "../scripts/make_table.py"


rule make_swap_table:
    input:
        evals=lambda wc: eval_files(wc.dataset, config["table1"]["rows"]),
    output:
        report(
            "results/{dataset}/swap.csv",
            caption="../report/swap_table.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=config["table1"]["rows"],
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        LOGS + "/make_swap_table.log",
    benchmark:
        BENCH + "/make_swap_table.tsv"
    script:
        "../scripts/make_swap_table.py"


rule make_table3:
    input:
        evals=lambda wc: eval_files(wc.dataset, config["table3"]["rows"]),
    output:
        report(
            "results/{dataset}/table3.csv",
            caption="../report/table3.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=config["table3"]["rows"],
        seeds=config["seeds"],
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(AUDIO),
    log:
        LOGS + "/make_table3.log",
    benchmark:
        BENCH + "/make_table3.tsv"
    script:
        "../scripts/make_table3.py"


def comparison_inputs(wildcards):
    tables = {}
    for ds in config["targets"]:
        if ds in AUDIO:
            tables[f"{ds}_table3"] = f"results/{ds}/table3.csv"
        else:
            tables[f"{ds}_table1"] = f"results/{ds}/table1.csv"
            if ds in config["table2"]["datasets"]:
                tables[f"{ds}_table2"] = f"results/{ds}/table2.csv"
    return tables


rule compare_with_paper:
    input:
        unpack(comparison_inputs),
    output:
        report("results/paper_comparison.md", caption="../report/comparison.rst", category="Tables"),
    params:
        seeds=config["seeds"],
    log:
        "results/logs/compare_with_paper.log",
    benchmark:
        "results/benchmarks/compare_with_paper.tsv"
    script:
        "../scripts/compare_with_paper.py"


rule make_figures:
    input:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        swap=report(
            "results/{dataset}/figures/{variant}_seed{seed}/swap.png",
            caption="../report/swap.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "swap (Fig. 4)"},
        ),
        swap_gif="results/{dataset}/figures/{variant}_seed{seed}/swap.gif",
        fixed_static=report(
            "results/{dataset}/figures/{variant}_seed{seed}/fixed_static.png",
            caption="../report/fixed_static.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "fixed z_f (Fig. 7a)"},
        ),
        fixed_dynamic=report(
            "results/{dataset}/figures/{variant}_seed{seed}/fixed_dynamic.png",
            caption="../report/fixed_dynamic.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "fixed z_1:T (Fig. 11b)"},
        ),
        samples=report(
            "results/{dataset}/figures/{variant}_seed{seed}/samples.png",
            caption="../report/samples.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "samples (Fig. 5)"},
        ),
    params:
        n=6,
        seed=config["evaluate"]["seed"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        LOGS + "/make_figures/{variant}_seed{seed}.log",
    benchmark:
        BENCH + "/make_figures/{variant}_seed{seed}.tsv"
    script:
        "../scripts/make_figures.py"


rule plot_training:
    input:
        steps="results/{dataset}/models/{variant}/seed{seed}/steps.csv",
    output:
        png=report(
            "results/{dataset}/figures/{variant}_seed{seed}/training.png",
            caption="../report/training.rst",
            category="Training curves",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "training curves"},
        ),
    log:
        LOGS + "/plot_training/{variant}_seed{seed}.log",
    benchmark:
        BENCH + "/plot_training/{variant}_seed{seed}.tsv"
    script:
        "../scripts/plot_training.py"


rule make_audio_figures:
    input:
        model="results/{dataset}/models/{variant}/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        report(
            "results/{dataset}/figures/{variant}_seed{seed}/mel_swap.png",
            caption="../report/mel_swap.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "{variant}", "figure": "mel swap (Fig. 9)"},
        ),
    params:
        seed=config["evaluate"]["seed"],
    wildcard_constraints:
        dataset=one_of(AUDIO),
    log:
        LOGS + "/make_audio_figures/{variant}_seed{seed}.log",
    benchmark:
        BENCH + "/make_audio_figures/{variant}_seed{seed}.tsv"
    script:
        "../scripts/make_audio_figures.py"
