#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Test of mpi_scripts/bench_report on the fixture sample_results.jsonl (invented figures, not
# results): the table has one row per workload, size and variant with the verdicts that the
# fixture's figures give, the W3 plot is a non-empty PNG, missing lines read "not measured",
# and bad input fails naming the line. Figures of real runs are never asserted.
# Usage: bench_report_test.sh BENCH_REPORT FIXTURE WORK_DIR
set -euo pipefail
report="${1:?usage: $0 BENCH_REPORT FIXTURE WORK_DIR}"
fixture="${2:?usage: $0 BENCH_REPORT FIXTURE WORK_DIR}"
work="${3:?usage: $0 BENCH_REPORT FIXTURE WORK_DIR}"
rm -rf "$work"
mkdir -p "$work"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
# "label<TAB>holds" of each data row of a Markdown table, in order.
verdicts() {
  awk -F '|' '/^\| / && !/^\| workload / {
    label = $2; holds = $(NF - 1)
    gsub(/^ +| +$/, "", label); gsub(/^ +| +$/, "", holds)
    print label "\t" holds
  }' "$1"
}
# The cell in column $2 (1 = workload) of the row of $1 whose label starts with $3.
cell() {
  awk -F '|' -v column="$2" -v label="$3" 'index($2, " " label) == 1 {
    text = $(column + 1); gsub(/^ +| +$/, "", text); print text
  }' "$1"
}

# ---- 1. the whole fixture: every row, every verdict, the plot
if ! "$report" --table "$work/table.md" --plot "$work/w3.png" "$fixture" 2> "$work/stderr"; then
  cat "$work/stderr" >&2
  fail "bench_report failed on the fixture"
fi
expected=$'W0 idle, 4 ranks: CPU per rank in 5 s\tyes
W1 `rpc_sync` round trip, median\tyes
W2 `rpc_async` calls/s, window 256\tno
W2 fire-and-forget calls/s\tyes
W3 echo 8 B: round trip, bandwidth\t—
W3 echo 1 KiB: round trip, bandwidth\t—
W3 echo 64 KiB: round trip, bandwidth\tyes
W3 echo 1 MiB: round trip, bandwidth\tyes
W3 echo 16 MiB: round trip, bandwidth\tno
W4 nested async call, 3 ranks, median\tyes
W5 3 → 1 calls/s, 4 ranks\tyes
W6 chain of depth 64, 1 server thread, 3 ranks\tno
W7 4 ranks, random one-way calls, half forwarded, then barrier(): calls/s\t—
W7 the same with rpc_async, futures collected: calls/s\t—'
if ! diff <(echo "$expected") <(verdicts "$work/table.md") > "$work/verdicts.diff"; then
  fail "rows or verdicts differ from the fixture's (< expected, > written):"
  cat "$work/verdicts.diff" >&2
fi
grep -qx 'Bars: 7 hold, 3 do not, 0 not measured.' "$work/table.md" ||
  fail "the summary line is not 'Bars: 7 hold, 3 do not, 0 not measured.'"
# The ratios behind the verdicts: W1 1.2 / 0.36, W4 exactly on its bar, W6 per hop.
[ "$(cell "$work/table.md" 4 'W1 ')" = "3.33×" ] || fail "W1 ratio is not 3.33×"
[ "$(cell "$work/table.md" 4 'W4 ')" = "3.00× mpirpc W1" ] || fail "W4 ratio is not 3.00× mpirpc W1"
[ "$(cell "$work/table.md" 3 'W6 ')" = "576 µs, 9.00 µs a hop" ] || fail "W6 figure is not 576 µs, 9.00 µs a hop"
# W4 and W6 show their raw chains beside the bar, which stays a multiple of mpirpc's W1.
[ "$(cell "$work/table.md" 2 'W4 ')" = "2.40 µs" ] || fail "raw W4 is not shown as 2.40 µs"
[ "$(cell "$work/table.md" 2 'W6 ')" = "192 µs, 3.00 µs a hop" ] || fail "raw W6 is not 192 µs, 3.00 µs a hop"
[ "$(cell "$work/table.md" 4 'W3 echo 16 MiB')" = "0.60× bandwidth" ] || fail "W3 16 MiB ratio is not 0.60×"
# W7 has no raw version: its ratios are to raw W2 (4.77 M/s).
[ "$(cell "$work/table.md" 3 'W7 4 ranks')" = "9.54 M/s" ] || fail "W7 one-way is not 9.54 M/s"
[ "$(cell "$work/table.md" 4 'W7 4 ranks')" = "2.00× raw W2" ] || fail "W7 one-way ratio is not 2.00× raw W2"
[ "$(cell "$work/table.md" 4 'W7 the same')" = "0.50× raw W2" ] || fail "W7 request/reply ratio is not 0.50× raw W2"
if [ ! -s "$work/w3.png" ]; then
  fail "no plot, or an empty one, at $work/w3.png"
elif [ "$(head -c 8 "$work/w3.png" | od -An -tx1 | tr -d ' \n')" != 89504e470d0a1a0a ]; then
  fail "$work/w3.png is not a PNG file"
fi

# ---- 2. lines missing (no W5, no mpirpc W3 16 MiB): "not measured", never a crash; the
# table on standard output this time.
grep -v '"W5"\|"bytes": 16777216, "median_us": 14000' "$fixture" > "$work/partial.jsonl"
if ! "$report" --plot "$work/partial.png" "$work/partial.jsonl" > "$work/partial.md" 2> "$work/stderr"; then
  cat "$work/stderr" >&2
  fail "bench_report failed on input with lines missing"
fi
[ "$(cell "$work/partial.md" 6 'W5 ')" = "not measured" ] || fail "W5 without lines is not 'not measured'"
[ "$(cell "$work/partial.md" 3 'W5 ')" = "—" ] || fail "W5 without lines does not show —"
[ "$(cell "$work/partial.md" 6 'W3 echo 16 MiB')" = "not measured" ] ||
  fail "W3 16 MiB without its mpirpc line is not 'not measured'"
grep -qx 'Bars: 6 hold, 2 do not, 2 not measured.' "$work/partial.md" ||
  fail "the summary of the partial input is not 'Bars: 6 hold, 2 do not, 2 not measured.'"
[ -s "$work/partial.png" ] || fail "no plot for the partial input"

# ---- 3. bad input: refused, naming the line (the one after the fixture's last)
bad_line=$(($(wc -l < "$fixture") + 1))
{ cat "$fixture"; echo '{"workload": "W1", "system": "mpirpc", "median_us": 1.2'; } > "$work/broken.jsonl"
if "$report" --no-plot "$work/broken.jsonl" > /dev/null 2> "$work/stderr"; then
  fail "bench_report accepted a malformed line"
elif ! grep -q "broken.jsonl line $bad_line is not valid JSON" "$work/stderr"; then
  fail "the error for a malformed line does not name line $bad_line:"
  cat "$work/stderr" >&2
fi
if "$report" --no-plot "$work/no_such_file.jsonl" > /dev/null 2> "$work/stderr"; then
  fail "bench_report accepted a missing file"
elif ! grep -q 'does not exist' "$work/stderr"; then
  fail "the error for a missing file does not say so:"
  cat "$work/stderr" >&2
fi

# ---- 4. rounds (mpi_scripts/bench --repeat K): each figure is the median of its lines, and
# ratios are taken between medians. W1: raw 0.40, 0.30, 0.50 (median 0.40) and mpirpc 2.0,
# 1.0 (even count: 1.5), so 3.75×, which holds; the last lines alone (0.50 vs 1.0) would give
# 2.00× and the first pair 5.00×. W2: raw 4, 9, 1 M/s (median 4 M/s), mpirpc 1.3 M/s: 0.33×.
cat > "$work/rounds.jsonl" <<'LINES'
{"round": 1, "workload": "W1", "system": "mpi", "ranks": 2, "median_us": 0.40}
{"round": 1, "workload": "W1", "system": "mpirpc", "ranks": 2, "median_us": 2.0}
{"round": 2, "workload": "W1", "system": "mpi", "ranks": 2, "median_us": 0.30}
{"round": 2, "workload": "W1", "system": "mpirpc", "ranks": 2, "median_us": 1.0}
{"round": 3, "workload": "W1", "system": "mpi", "ranks": 2, "median_us": 0.50}
{"round": 1, "workload": "W2", "system": "mpi", "ranks": 2, "calls_per_s": 4000000}
{"round": 2, "workload": "W2", "system": "mpi", "ranks": 2, "calls_per_s": 9000000}
{"round": 3, "workload": "W2", "system": "mpi", "ranks": 2, "calls_per_s": 1000000}
{"round": 1, "workload": "W2", "system": "mpirpc", "ranks": 2, "calls_per_s": 1300000}
LINES
if ! "$report" --no-plot "$work/rounds.jsonl" > "$work/rounds.md" 2> "$work/stderr"; then
  cat "$work/stderr" >&2
  fail "bench_report failed on repeated rounds"
fi
[ "$(cell "$work/rounds.md" 2 'W1 ')" = "0.40 µs" ] || fail "raw W1 over rounds is not the median 0.40 µs"
[ "$(cell "$work/rounds.md" 3 'W1 ')" = "1.50 µs" ] ||
  fail "mpirpc W1 over two rounds is not the mean of the middle two, 1.50 µs"
[ "$(cell "$work/rounds.md" 4 'W1 ')" = "3.75×" ] || fail "W1 ratio over rounds is not 3.75×"
[ "$(cell "$work/rounds.md" 6 'W1 ')" = "yes" ] || fail "W1 over rounds does not hold"
[ "$(cell "$work/rounds.md" 4 'W2 `rpc_async`')" = "0.33×" ] || fail "W2 ratio over rounds is not 0.33×"
grep -q 'median over the rounds of the run (up to 3 lines each)' "$work/rounds.md" ||
  fail "the table does not say that its figures are medians over rounds"
grep -q 'median over the rounds' "$work/table.md" &&
  fail "a table of single lines claims medians over rounds"

if [ "$failures" -ne 0 ]; then
  echo "bench_report_test: $failures check(s) failed" >&2
  exit 1
fi
echo "bench_report_test: every check passed"
