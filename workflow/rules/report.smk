# Tables (every number from the pipeline's evaluation files, mean ± std over seeds), the comparison
# with the paper's values, and figures. Outputs marked report() go into `snakemake --report`.


rule make_table:
    input:
        evals=lambda wc: eval_files(wc.dataset, config[f"table{wc.table}"]["rows"]),
        judge="results/{dataset}/judge/metrics.json",
    output:
        report(
            "results/{dataset}/table{table}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=lambda wc: config[f"table{wc.table}"]["rows"],
        seeds=lambda wc: configs.seeds(config, wc.dataset),
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
        table="1|2",
    log:
        "results/{dataset}/logs/make_table/table{table}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_table/table{table}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_table.py"


rule make_swap_table:
    input:
        evals=lambda wc: eval_files(wc.dataset, swap_rows()),
    output:
        report(
            "results/{dataset}/swap.csv",
            caption="../report/swap_table.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=swap_rows(),
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        "results/{dataset}/logs/make_swap_table.log",
    benchmark:
        "results/{dataset}/benchmarks/make_swap_table.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_swap_table.py"


rule make_eer_table:
    input:
        evals=lambda wc: eval_files(wc.dataset, config[f"table{wc.table}"]["rows"]),
    output:
        report(
            "results/{dataset}/table{table}.csv",
            caption="../report/table3.rst",
            category="Tables",
            subcategory="{dataset}",
        ),
    params:
        rows=lambda wc: config[f"table{wc.table}"]["rows"],
        seeds=lambda wc: configs.seeds(config, wc.dataset),
        not_implemented=config["not_implemented"],
    wildcard_constraints:
        dataset=one_of(AUDIO),
        table="2|3",
    log:
        "results/{dataset}/logs/make_eer_table/table{table}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_eer_table/table{table}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_eer_table.py"


rule compare_with_paper:
    input:
        unpack(comparison_inputs),
    output:
        report("results/paper_comparison.md", caption="../report/comparison.rst", category="Tables"),
    params:
        seeds={d: configs.seeds(config, d) for d in config["datasets"]},
    log:
        "results/logs/compare_with_paper.log",
    benchmark:
        "results/benchmarks/compare_with_paper.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/compare_with_paper.py"


rule make_generation_figure:
    input:
        full="results/{dataset}/models/full/seed{seed}/model.pt",
        mocogan="results/{dataset}/models/mocogan/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        report(
            "results/{dataset}/figures/generation_seed{seed}.png",
            caption="../report/generation.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "full and MoCoGAN", "figure": "generation (Fig. 5)"},
        ),
    params:
        n=4,
        seed=config["evaluate"]["seed"],
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        "results/{dataset}/logs/make_generation_figure/seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_generation_figure/seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_generation_figure.py"


rule make_motion_transfer_figure:
    input:
        full="results/{dataset}/models/full/seed{seed}/model.pt",
        dsvae="results/{dataset}/models/dsvae/seed{seed}/model.pt",
        monkeynet="results/{dataset}/models/monkeynet/seed{seed}/model.pt",
        test=lambda wc: clip_shards(wc.dataset, "test"),
    output:
        report(
            "results/{dataset}/figures/motion_transfer_seed{seed}.png",
            caption="../report/motion_transfer.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"model": "full, DSVAE and MonkeyNet", "figure": "motion transfer (Fig. 4)"},
        ),
    params:
        n=3,
        seed=config["evaluate"]["seed"],
        dataset=lambda wc: dataset_cfg(wc.dataset),
    wildcard_constraints:
        dataset=one_of(VIDEO),
    log:
        "results/{dataset}/logs/make_motion_transfer_figure/seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_motion_transfer_figure/seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_motion_transfer_figure.py"


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
        "results/{dataset}/logs/make_figures/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_figures/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
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
        "results/{dataset}/logs/plot_training/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/plot_training/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
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
        "results/{dataset}/logs/make_audio_figures/{variant}_seed{seed}.log",
    benchmark:
        "results/{dataset}/benchmarks/make_audio_figures/{variant}_seed{seed}.tsv"
    conda:
        "../envs/s3vae.yaml"
    script:
        "../scripts/make_audio_figures.py"
