"""Collects runs/score-table1-digits into table.csv and table.md (clean,
PGD-20 and AutoAttack accuracy in % of the best and last checkpoints)."""
import csv, json, sys
from pathlib import Path

runs, here = Path(sys.argv[1]), Path(sys.argv[2])
LOSSES = ["l2", "l1", "linf", "js-dist", "js", "kl", "l1-sq", "se"]
LRS = ["0.02", "0.01", "0.002"]
rows = []
for loss in LOSSES:
    for lr in LRS:
        d = runs / f"{loss}-{lr}"
        if not (d / "done").exists():
            continue
        meta = json.loads((d / "train" / "model-best.json").read_text())
        row = {"loss": loss, "lr": lr, "best_epoch": meta["hyperparameters"]["validation"]["best_epoch"]}
        for w in ["best", "last"]:
            s = next(csv.DictReader(open(d / f"eval-{w}" / "summary.csv")))
            for k, col in [("clean", "clean_acc"), ("pgd20", "acc_pgd20"), ("aa", "acc_aa")]:
                row[f"{w}_{k}"] = round(100 * float(s[col]), 1)
        rows.append(row)
if not rows:
    sys.exit("no finished runs")
keys = list(rows[0])
with open(here / "table.csv", "w", newline="") as f:
    w = csv.DictWriter(f, keys)
    w.writeheader()
    w.writerows(rows)
with open(here / "table.md", "w") as f:
    f.write("| loss | lr | best epoch | best: clean | PGD-20 | AA | last: clean | PGD-20 | AA |\n")
    f.write("|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write("| {loss} | {lr} | {best_epoch} | {best_clean} | {best_pgd20} | {best_aa} | {last_clean} | {last_pgd20} | {last_aa} |\n".format(**r))
print((here / "table.md").read_text())
