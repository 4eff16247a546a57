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
W6 chain of depth 64, 1 server thread, 3 ranks\tno'
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

if [ "$failures" -ne 0 ]; then
  echo "bench_report_test: $failures check(s) failed" >&2
  exit 1
fi
echo "bench_report_test: every check passed"
