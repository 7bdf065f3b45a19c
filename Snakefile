# S3VAE (Zhu et al., CVPR 2020) as a pipeline: raw data -> clip shards -> pseudo-labels -> training ->
# evaluation -> tables and figures. Default target: every dataset in config["targets"] with the quick
# CPU configuration (config/config.yaml) and results/paper_comparison.md; the paper's GPU settings:
# --configfile config/paper.yaml. One dataset: `snakemake results/smmnist/table1.csv`.
from snakemake.utils import min_version

min_version("9.1")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/shards.smk"
include: "workflow/rules/pseudolabels.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        [path for ds in config["targets"] for path in dataset_targets(ds)],
        "results/paper_comparison.md",
