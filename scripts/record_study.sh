#!/usr/bin/env bash
# Run one study and commit-ready record it under experiments/results/NAME/:
#   scripts/record_study.sh NAME CONFIG[:VARIANT] [jmem run flags...]
# e.g. scripts/record_study.sh digits experiments/digits.py
# Runs `jmem run` into runs/NAME (resuming if it exists), measures wall time and peak memory
# (/usr/bin/time -v), the machine's load before and after, then copies the human-readable
# results (report.md and its figures, the verdict, retrain.json, ablation.json, loo.json,
# thresholds.json, reliability.json) and writes RUN.md with the command, date, machine, load,
# wall time, peak memory and jmem commit. The run directory's arrays stay in runs/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; spec="$2"; shift 2
work="runs/$name"; out="experiments/results/$name"
scripts/setup.sh >/dev/null
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
/usr/bin/time -v -o "/tmp/jmem_time_$name.txt" .venv/bin/jmem run "$spec" --workdir "$work" --no-progress "$@" \
  2>&1 | tee "/tmp/jmem_log_$name.txt"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
wall=$(grep "Elapsed (wall clock)" "/tmp/jmem_time_$name.txt" | awk '{print $NF}')
rss_kb=$(grep "Maximum resident set size" "/tmp/jmem_time_$name.txt" | awk '{print $NF}')
cpu=$(grep "Percent of CPU" "/tmp/jmem_time_$name.txt" | awk '{print $NF}')
rm -rf "$out"; mkdir -p "$out"
cp "$work/report.md" "$out/"
[ -d "$work/figures" ] && cp -r "$work/figures" "$out/"
for f in thresholds.json reliability.json retrain/retrain.json retrain/ablation.json retrain/verdict.txt loo/loo.json loo.json; do
  [ -e "$work/$f" ] && cp "$work/$f" "$out/$(basename "$f")"
done
stages=$(grep -o 'time per stage: .*' "/tmp/jmem_log_$name.txt" | tail -1 || true)
cat > "$out/RUN.md" <<MD
# How these files were made

- Command: \`scripts/record_study.sh $name $spec $*\`, i.e. \`jmem run $spec --workdir $work --no-progress $*\`
- jmem commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- jmem experiments ':!experiments/results' || echo " (with uncommitted changes)")
- Date: $start (UTC). Machine: $(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'), jax $(.venv/bin/python -c 'import jax; print(jax.__version__)'), CPU only.
- Load average (1, 5, 15 min) before: $load_before; after: $load_after. Other jobs shared the machine when the load exceeds the core count: wall times are then upper bounds.
- Wall time $wall; $cpu of a core on average; peak resident memory $((rss_kb / 1024)) MiB. ${stages}
- Files: \`report.md\` (read it first) with \`figures/\`; \`verdict.txt\` (the short answer); \`retrain.json\` and \`ablation.json\` (every comparison, the headline family, the gates); \`thresholds.json\` (every rule at every rate); \`reliability.json\`; \`loo.json\` when the study ran leave-one-out. The arrays stay in \`$work/\` (not committed; the command above rebuilds them bitwise).
MD
echo "recorded $out (wall $wall, peak $((rss_kb / 1024)) MiB)"
