#!/usr/bin/env bash
# Regenerate every figure and table of docs/reproduction/{ablation_,}fashion_mnist.md from the
# cells of the Fashion-MNIST ablation study (config/paper/ablation_fashion_mnist.yaml), finished
# or not: every number is computed from the rounds the cells have written.
#
#   bash docs/reproduction/refresh.sh [results/ablation_fashion_mnist]
set -euo pipefail
STUDY=${1:-results/ablation_fashion_mnist}
D=docs/reproduction
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
A="python -m asknlearn"

$A aggregate "$STUDY"/runs/fashion_mnist/*/seed*/noise0/rounds.csv \
    --out "$T/rounds.csv" --reliability-out "$T/reliability.csv"
cp "$T/rounds.csv" "$D/ablation_fashion_mnist_rounds.csv"

# the ablation: BADGE, its controls and both Ask-n-Learn variants
ABL=badge,badge-dropout,badge-lwcc,badge-vwcc,badge-refine,ask-n-learn-lwcc,ask-n-learn-vwcc
$A plot curves --rounds "$T/rounds.csv" --dataset fashion_mnist --strategies $ABL \
    --out "$D/ablation_fashion_mnist.png" --out "$D/ablation_fashion_mnist.pdf"
$A plot curves --rounds "$T/rounds.csv" --dataset fashion_mnist \
    --strategies badge,badge-dropout,badge-vwcc,ask-n-learn-vwcc --out "$D/ablation_fashion_mnist_vwcc.png"
$A plot curves --rounds "$T/rounds.csv" --dataset fashion_mnist \
    --strategies badge,badge-lwcc,badge-refine,ask-n-learn-lwcc --out "$D/ablation_fashion_mnist_lwcc.png"
$A ablation "$STUDY" --strategies $ABL \
    --labels 1100 2100 5100 10100 --aulc-to 2100 5100 10100 \
    --figure "$D/ablation_fashion_mnist_diagnostics.png" > "$D/ablation_fashion_mnist_tables.md"

# Fig. 3: the paper's six strategies, from the same cells (one commit). Reliability at round 10
# (10,100 labels, the protocol's last round).
FIG3=random,confidence,entropy,badge,ask-n-learn-lwcc,ask-n-learn-vwcc
python - "$T" "$FIG3" <<'PY'
import sys
import pandas as pd
t, keep = sys.argv[1], sys.argv[2].split(",")
r = pd.read_csv(f"{t}/rounds.csv")
r[r.strategy.isin(keep)].to_csv(f"{t}/fig3.csv", index=False)
b = pd.read_csv(f"{t}/reliability.csv")
b[b.strategy.isin(keep) & (b["round"] == 10)].to_csv(f"{t}/fig3_reliability.csv", index=False)
PY
$A plot curves --rounds "$T/fig3.csv" --dataset fashion_mnist --strategies $FIG3 \
    --out "$D/fashion_mnist.png" --out "$D/fashion_mnist.pdf"
$A plot reliability --reliability "$T/fig3_reliability.csv" --dataset fashion_mnist \
    --strategies $FIG3 --out "$D/fashion_mnist_reliability.png"
$A ablation "$STUDY" --strategies $FIG3 --no-diagnostics \
    --labels 1100 2100 5100 10100 --aulc-to 2100 5100 10100 > "$D/fashion_mnist_tables.md"
echo "refreshed $D from $STUDY"
