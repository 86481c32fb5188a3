#!/usr/bin/env bash
# The whole suite from a fresh clone, as CI runs it (`make test` after `make install`): its wall
# time, its result and the load average before and after, as one row appended to
# benchmarks/results/suite_time.md of the checkout this script is in.
#
#   benchmarks/bench_suite.sh                  # HEAD, `make test`
#   benchmarks/bench_suite.sh HEAD "make test TEST_WORKERS=0"
#
# The clone goes to a new folder beside /tmp/shared when that exists (the tests look for the
# GitHub-stars dataset in ../shared), else under $TMPDIR. It is removed after a passing run and
# kept, with its suite.log, after a failing one.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
commit="$(git -C "$repo" rev-parse --short "${1:-HEAD}")"
command="${2:-make test}"
parent=/tmp
[ -d /tmp/shared ] || parent="${TMPDIR:-/tmp}"
clone="$(mktemp -d "$parent/suite_XXXXXX")"
git clone -q "$repo" "$clone" && git -C "$clone" checkout -q "$commit"
cd "$clone"
install_start=$(date +%s)
make -s install > install.log 2>&1 || { echo "install failed: $clone/install.log"; exit 1; }
install_s=$(( $(date +%s) - install_start ))
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
start=$(date +%s)
status=0
$command > suite.log 2>&1 || status=$?
wall=$(( $(date +%s) - start ))
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
summary="$(grep -E '^=+ .*(passed|failed|error).* in ' suite.log | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')"
[ -n "$summary" ] || summary="no pytest summary (exit $status)"
results="$repo/benchmarks/results/suite_time.md"
if [ ! -f "$results" ]; then
    cat > "$results" <<'EOF'
# The whole suite from a fresh clone

Rows appended by `benchmarks/bench_suite.sh [commit] [command]`: a fresh clone, `make install`
(not timed in "suite"), then the command. Load average = 1, 5 and 15 minutes, before / after.

| started (UTC) | commit | command | exit | result | suite | install | load before | load after | CPU |
|---|---|---|---:|---|---:|---:|---|---|---|
EOF
fi
cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
printf '| %s | %s | `%s` | %s | %s | %dm%02ds | %ds | %s | %s | %s |\n' \
    "$(date -u -d "@$start" +%Y-%m-%dT%H:%M)" "$commit" "$command" "$status" "$summary" \
    $((wall / 60)) $((wall % 60)) "$install_s" "$load_before" "$load_after" "$cpu" >> "$results"
tail -1 "$results"
if [ "$status" != 0 ]; then
    echo "kept for reading: $clone/suite.log"
else
    cd / && rm -rf "$clone"
fi
exit "$status"
