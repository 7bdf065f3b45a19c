"""The paper's reported numbers (Zhu et al., CVPR 2020, Tables 1-3), for results/paper_comparison.md.

Accuracies and EERs in percent, as printed. Keys: dataset -> method -> metric.
"""

TABLE1 = {
    "smmnist": {
        "mocogan": {"acc": 74.55, "IS": 4.078, "H_y_x": 0.194, "H_y": 0.191},
        "dsvae": {"acc": 88.19, "IS": 6.210, "H_y_x": 0.185, "H_y": 2.011},
        "baseline": {"acc": 90.12, "IS": 6.543, "H_y_x": 0.167, "H_y": 2.052},
        "full": {"acc": 95.09, "IS": 7.072, "H_y_x": 0.150, "H_y": 2.106},
        "baseline-sv": {"acc": 92.18, "IS": 6.845, "H_y_x": 0.156, "H_y": 2.057},
    },
    "sprites": {
        "mocogan": {"acc": 92.89, "IS": 8.461, "H_y_x": 0.090, "H_y": 2.192},
        "dsvae": {"acc": 90.73, "IS": 8.384, "H_y_x": 0.072, "H_y": 2.192},
        "baseline": {"acc": 91.42, "IS": 8.312, "H_y_x": 0.071, "H_y": 2.190},
        "full": {"acc": 99.49, "IS": 8.637, "H_y_x": 0.041, "H_y": 2.197},
        "baseline-sv": {"acc": 98.91, "IS": 8.741, "H_y_x": 0.028, "H_y": 2.196},
    },
    "mug": {
        "mocogan": {"acc": 63.12, "IS": 4.332, "H_y_x": 0.183, "H_y": 1.721},
        "dsvae": {"acc": 54.29, "IS": 3.608, "H_y_x": 0.374, "H_y": 1.657},
        "baseline": {"acc": 53.83, "IS": 3.736, "H_y_x": 0.347, "H_y": 1.717},
        "full": {"acc": 70.51, "IS": 5.136, "H_y_x": 0.135, "H_y": 1.760},
        "baseline-sv": {"acc": 72.32, "IS": 5.006, "H_y_x": 0.129, "H_y": 1.740},
    },
}

TABLE2 = {  # MUG ablation
    "mug": {
        "no-scc": {"acc": 61.45, "IS": 4.850, "H_y_x": 0.201, "H_y": 1.734},
        "no-dfp": {"acc": 58.32, "IS": 4.423, "H_y_x": 0.284, "H_y": 1.721},
        "no-mi": {"acc": 66.07, "IS": 4.874, "H_y_x": 0.175, "H_y": 1.749},
        "full": {"acc": 70.51, "IS": 5.136, "H_y_x": 0.135, "H_y": 1.760},
    },
}

TABLE3 = {  # TIMIT speaker verification, EER %; the paper has no FSDD numbers
    "timit": {
        "fhvae": {"eer_static": 5.06},            # z2, 16-d; the paper gives no z1 row
        "dsvae": {"eer_static": 4.82, "eer_dynamic": 18.89},
        "full": {"eer_static": 4.80, "eer_dynamic": 40.12},
    },
}
