#!/usr/bin/env bash
# The GPU check, one script run from the repository root on a GPU host (about 5 minutes on one
# H200; under 10): installs the wheelhouse, then
#   1. bench/gpu_mfu.py at its default GPU config: the real train step's MFU, with attention
#      "auto" (cuDNN's fused kernel) and "xla";
#   2. train.py end to end on CMUdict G2P for G2P_STEPS steps, twice: configs/g2p_gru.py (the
#      one-hour recipe, float32) and configs/g2p_transformer.py in bfloat16 (cuDNN attention),
#      each with its steps/s and the wall time projected for the recipe's step count.
#
#   bash bench/gpu_check.sh [G2P_FILE]     # G2P_FILE: g014b2b.train (default: the config's path)
#
# Before, where pip reaches an index: `python bench/gpu_wheels.py build` (the .whl/ folder, which
# must travel with the repository, as must G2P_FILE). Environment knobs, for a CPU dry run too:
#   PYTHON (python3), SITE (/tmp/site: where the wheels go), WORK (/tmp/gpu_check: workdirs),
#   MFU_ARGS (extra gpu_mfu.py flags, e.g. --tiny), G2P_STEPS (3000), G2P_ARGS (extra train.py
#   flags for both G2P runs, e.g. a smaller model).
# shellcheck disable=SC2086  # MFU_ARGS and G2P_ARGS are lists of flags, split on purpose
set -euo pipefail
data=()  # the lexicon, as an absolute path from the caller's directory
if [ -n "${1:-}" ]; then
    data=(--config.data_path="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")")
fi
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/gpu_check}
G2P_STEPS=${G2P_STEPS:-3000}
export PYTHONUNBUFFERED=1
start=$(date +%s)
failed=0
phase() { echo "=== $1 ($(( $(date +%s) - start )) s)"; }
# A failing phase is reported and the next one still runs; the script then exits 1.
run() { "$@" || { echo "=== failed ($?): $*"; failed=1; }; }

phase "wheels"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" bench/gpu_wheels.py install --target "$SITE"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
run "$PYTHON" bench/gpu_wheels.py check
nvidia-smi -L 2>/dev/null || true

phase "MFU, attention auto"
run "$PYTHON" bench/gpu_mfu.py ${MFU_ARGS:-}
phase "MFU, attention xla"
run "$PYTHON" bench/gpu_mfu.py ${MFU_ARGS:-} --attention xla

rm -rf "$WORK"
mkdir -p "$WORK"
for config in g2p_gru g2p_transformer; do
    extra=()
    if [ "$config" = g2p_transformer ]; then extra=(--config.model.dtype=bfloat16); fi
    phase "train.py $config${extra[*]:+ ${extra[*]}}, $G2P_STEPS steps"
    run "$PYTHON" train.py --config "configs/$config.py" --workdir "$WORK/$config" \
        --config.data_dir="$WORK/tfds" "${data[@]}" "${extra[@]}" \
        --config.num_train_steps="$G2P_STEPS" --config.log_every=$(( (G2P_STEPS + 9) / 10 )) \
        --config.eval_every="$G2P_STEPS" --config.checkpoint_every="$G2P_STEPS" ${G2P_ARGS:-}
    # the recipe's own step count and eval interval, for the projection
    recipe=$("$PYTHON" -c "from configs import $config as m; c = m.get_config(); \
print(c.num_train_steps, c.eval_every)") || recipe="$G2P_STEPS $G2P_STEPS"
    read -r steps every <<< "$recipe"
    run "$PYTHON" bench/train_speed.py "$WORK/$config" --steps "$steps" --eval-every "$every" \
        --name "$config"
done
phase "done"
exit "$failed"
