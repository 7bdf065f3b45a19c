"""Reporting without a pipeline run: the paper comparison from hand-written tables."""

import csv

from s3vae.reporting.tables import paper_comparison


def _write(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_paper_comparison_pairs_each_cell_with_the_papers(tmp_path):
    t1 = _write(tmp_path / "t1.csv", [
        {"method": "full", "acc": 99.5, "acc_std": 0.1, "IS": 5.9, "IS_std": 0.0,
         "H_y_x": 0.04, "H_y_x_std": 0.0, "H_y": 2.2, "H_y_std": 0.0, "note": ""},
        {"method": "mocogan", "acc": "", "acc_std": "", "IS": "", "IS_std": "",
         "H_y_x": "", "H_y_x_std": "", "H_y": "", "H_y_std": "", "note": "not implemented"}])
    t3 = _write(tmp_path / "t3.csv", [
        {"method": "full", "eer_static": 5.0, "eer_static_std": 1.0,
         "eer_dynamic": 36.0, "eer_dynamic_std": 2.0, "note": ""}])
    text = paper_comparison({"sprites_table1": t1, "fsdd_table3": t3}, {"sprites": [1], "fsdd": [1, 2, 3]})
    assert "Seeds: [1, 2, 3]." in text
    assert "## sprites: table1" in text and "## fsdd: table3 (paper: TIMIT)" in text
    s3vae_row = next(line for line in text.splitlines() if line.startswith("| full |") and "99.500" in line)
    assert "99.500 ± 0.100 | 99.49" in s3vae_row
    assert "| mocogan | not implemented | 92.89 |" in text
    assert "36.000 ± 2.000 | 40.12" in text
    assert "SMMNIST is not in this run" in text  # the paper's TIMIT z_1:T EER beside ours
