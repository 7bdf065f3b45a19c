# S3VAE (Zhu et al., CVPR 2020) as a pipeline: raw data -> shards -> pseudo-labels -> training ->
# evaluation -> tables. Default target: results/sprites/table1.csv with the quick CPU configuration
# (config/config.yaml); the paper's GPU settings: --configfile config/paper.yaml.
from snakemake.utils import min_version

min_version("9.1")


configfile: "config/config.yaml"


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
        [f"results/{ds}/table1.csv" for ds in config["targets"]],
        [
            f"results/{ds}/figures/{variant}_seed{config['seeds'][0]}/swap.png"
            for ds in config["targets"]
            for variant in config["table1"]["rows"]
        ],
