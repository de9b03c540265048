#!/bin/sh
# Staged vs one-shot QAT (docs/QUANT.md, "Staged QAT"): every run starts from
# the same float checkpoint (the docs/MODELS.md float recipe, trained once
# and reused), one `qat train --json` per (variant, seed), one line each in
# OUT/runs.tsv, and OUT/summary.tsv with mean and sample standard deviation
# over the seeds.
#
#   sh scripts/staged_experiment.sh w2a8        one-shot w2a8 3 epochs vs w8a8:1,w4a8:1,w2a8:1
#   sh scripts/staged_experiment.sh w4a4        closing W4A4's gap to float: one-shot 2/3/6 epochs, staged
#   sh scripts/staged_experiment.sh w1a8        binary weights (needs the w1 spec), as w2a8
#
# Environment: QAT (the binary, default build/tools/qat), MODEL (lenet5),
# SEEDS ("1 2 3"), THREADS (1), OUT (results/staged-MODEL), DATA (--data,
# default the qat default), FLOAT (a float checkpoint to reuse instead of
# training one). Runs are sequential: a lenet5 QAT epoch takes 10-30 s on
# one core.
set -eu

EXP=${1:-w2a8}
QAT=${QAT:-build/tools/qat}
MODEL=${MODEL:-lenet5}
SEEDS=${SEEDS:-"1 2 3"}
THREADS=${THREADS:-1}
OUT=${OUT:-results/staged-$MODEL}
DATA_ARG=""
[ -n "${DATA:-}" ] && DATA_ARG="--data $DATA"
mkdir -p "$OUT"
FLOAT=${FLOAT:-$OUT/$MODEL-float.h5}

# variant name | qat train arguments
case "$EXP" in
w2a8)
    VARIANTS="oneshot-w2a8-3ep|--quant w2a8 --epochs 3
staged-w8a8:1,w4a8:1,w2a8:1|--schedule w8a8:1,w4a8:1,w2a8:1
staged-w4a8:1,w2a8:2|--schedule w4a8:1,w2a8:2" ;;
w1a8)
    VARIANTS="oneshot-w1a8-3ep|--quant w1a8 --epochs 3
staged-w8a8:1,w4a8:1,w1a8:1|--schedule w8a8:1,w4a8:1,w1a8:1
staged-w2a8:1,w1a8:2|--schedule w2a8:1,w1a8:2" ;;
w4a4)
    VARIANTS="oneshot-w4a4-2ep|--quant w4a4 --epochs 2
oneshot-w4a4-3ep|--quant w4a4 --epochs 3
staged-w8a8:1,w4a4:2|--schedule w8a8:1,w4a4:2
staged-weights:1,all:2|--quant w4a4 --schedule weights:1,all:2
staged-w4a8:1,w4a4:2|--schedule w4a8:1,w4a4:2
oneshot-w4a4-6ep|--quant w4a4 --epochs 6" ;;
*)
    echo "usage: sh scripts/staged_experiment.sh w2a8|w4a4|w1a8" >&2
    exit 2 ;;
esac

if [ ! -f "$FLOAT" ]; then
    echo "== float $MODEL, 5 epochs -> $FLOAT" >&2
    "$QAT" train --model "$MODEL" --epochs 5 --seed 1 --threads "$THREADS" $DATA_ARG --out "$FLOAT" --json \
        >"$OUT/float.json"
fi
float_acc=$("$QAT" eval "$FLOAT" --threads "$THREADS" $DATA_ARG --json 2>/dev/null |
    sed -n 's/.*"float_accuracy":\([0-9.]*\).*/\1/p; s/.*"test_accuracy":\([0-9.]*\).*/\1/p' | head -n 1)

RUNS="$OUT/runs.tsv"
[ -f "$RUNS" ] || printf 'experiment\tvariant\tseed\ttest_accuracy\tseconds\n' >"$RUNS"
echo "$VARIANTS" | while IFS='|' read -r name args; do
    for s in $SEEDS; do
        if grep -q "^$EXP	$name	$s	" "$RUNS"; then continue; fi # done in an earlier call
        echo "== $EXP $name seed $s" >&2
        json=$("$QAT" train --from "$FLOAT" $args --seed "$s" --threads "$THREADS" $DATA_ARG \
            --out "$OUT/$EXP-$name-$s.h5" --json 2>"$OUT/$EXP-$name-$s.log")
        acc=$(echo "$json" | sed -n 's/.*"test_accuracy":\([0-9.]*\).*/\1/p')
        sec=$(echo "$json" | sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p')
        printf '%s\t%s\t%s\t%s\t%s\n' "$EXP" "$name" "$s" "$acc" "$sec" >>"$RUNS"
        echo "   test_accuracy $acc, $sec s" >&2
    done
done

# mean, sample standard deviation and range over the seeds; the gap to float
awk -F '\t' -v f="$float_acc" 'NR > 1 {
        k = $1 "\t" $2; n[k]++; s[k] += $4; q[k] += $4 * $4; t[k] += $5
        if (!(k in lo) || $4 < lo[k]) lo[k] = $4
        if (!(k in hi) || $4 > hi[k]) hi[k] = $4
        if (!(k in seen)) { seen[k] = 1; order[++m] = k }
    }
    END {
        printf "experiment\tvariant\tseeds\tmean\tstd\tmin\tmax\tgap_to_float\tseconds_per_run\n"
        for (i = 1; i <= m; i++) {
            k = order[i]; mu = s[k] / n[k]
            sd = n[k] > 1 ? sqrt((q[k] - n[k] * mu * mu) / (n[k] - 1)) : 0
            printf "%s\t%d\t%.4f\t%.4f\t%.4f\t%.4f\t%+.4f\t%.0f\n", k, n[k], mu, sd, lo[k], hi[k], mu - f, t[k] / n[k]
        }
        printf "float\t-\t1\t%s\n", f
    }' "$RUNS" | tee "$OUT/summary.tsv"
