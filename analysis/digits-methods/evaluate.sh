#!/usr/bin/env bash
# Evaluates every run of train.sh with `attack` (PGD-20, AutoAttack standard,
# SPSA at the digits ε = 0.2, L∞) on one shared subset (the whole digits
# test split, 359 points) and writes analysis/digits-methods/table.{csv,md}.
# SPSA (32 iterations × 128 samples) costs ~4 min per model on one core, so
# it runs on the runs named in SPSA_RUNS only. Evaluations are resumable and
# skipped when finished.
set -euo pipefail
BIN=${BIN:-target/release}
RUNS=${RUNS:-runs/digits-methods}
HERE=$(dirname "$0")
SPSA_RUNS=${SPSA_RUNS:-"standard-base pgd-at-base"}
THREADS=${TRAIN_THREADS:+--threads $TRAIN_THREADS}
names=(standard pgd-at trades mart trades-awp mart-awp)
for name in "${names[@]}"; do
  for variant in base taser; do
    run=$RUNS/$name-$variant
    [ -f "$run/eval/summary.csv" ] && continue
    subset=()
    [ -f "$RUNS/subset.json" ] && subset=(--subset "$RUNS/subset.json")
    attacks=pgd20,aa
    [[ " $SPSA_RUNS " == *" $name-$variant "* ]] && attacks=pgd20,aa,spsa
    echo "== $name $variant"
    # shellcheck disable=SC2086
    "$BIN/attack" $THREADS --checkpoint "$run/model.safetensors" --attacks $attacks \
      --norm linf --eps 0.2 --seed 0 --device cpu "${subset[@]}" --out "$run/eval"
    [ -f "$RUNS/subset.json" ] || cp "$run/eval/subset.json" "$RUNS/subset.json"
  done
done

# column NAME FILE: the value of column NAME in the one-row CSV FILE.
column() {
  awk -F, -v key="$1" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == key) c = i }
                       NR == 2 { if (c) print $c; else print "" }' "$2"
}
csv=$HERE/table.csv
md=$HERE/table.md
echo "method,taser,clean,pgd20,aa,spsa,worst_case,train_seconds,seconds_aa,seconds_spsa" > "$csv.tmp"
{
  echo "| method | TASER | clean | PGD-20 | AutoAttack | SPSA | worst case | train s | AA s | SPSA s |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$md.tmp"
for name in "${names[@]}"; do
  for variant in base taser; do
    s=$RUNS/$name-$variant/eval/summary.csv
    train_s=$(grep -o '"train_seconds": [0-9.]*' "$RUNS/$name-$variant/model.json" | cut -d' ' -f2)
    row=("$name" "$([ $variant = taser ] && echo yes || echo no)")
    for key in clean_acc acc_pgd20 acc_aa acc_spsa acc_worst_case; do row+=("$(column $key "$s")"); done
    row+=("$train_s" "$(column seconds_aa "$s")" "$(column seconds_spsa "$s")")
    (IFS=,; echo "${row[*]}") >> "$csv.tmp"
    pct() { [ -n "$1" ] && awk "BEGIN{printf \"%.1f%%\", 100*$1}" || echo "—"; }
    secs() { [ -n "$1" ] && awk "BEGIN{printf \"%.0f\", $1}" || echo "—"; }
    echo "| ${row[0]} | ${row[1]} | $(pct "${row[2]}") | $(pct "${row[3]}") | $(pct "${row[4]}") | $(pct "${row[5]}") | $(pct "${row[6]}") | $(secs "${row[7]}") | $(secs "${row[8]}") | $(secs "${row[9]}") |" >> "$md.tmp"
  done
done
mv "$csv.tmp" "$csv"
mv "$md.tmp" "$md"
cat "$md"

# Paired bootstrap of every method's TASER gain (Table 2 shape, forest plot).
pairs=()
for name in "${names[@]}"; do
  pairs+=(--baseline "$RUNS/$name-base/eval" --treatment "$RUNS/$name-taser/eval" --label "$name")
done
"$BIN/bootstrap" "${pairs[@]}" --seed 0 --out "$HERE/bootstrap" > /dev/null
cat "$HERE/bootstrap/table2.md"
