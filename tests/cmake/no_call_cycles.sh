#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fails if two object files of the library (argument 1, a static library) call each other,
# directly or around a loop: each part of lib/ may use only the parts below it (lib/README.md).
# A call is read from the symbols: an object file that uses a function or variable which
# another one defines calls it (weak symbols, such as inline functions and vtables, are not
# counted: a hook is a virtual call). Arguments 2 and 3 name nm (binutils) and tsort
# (coreutils); default: the ones on PATH.
set -euo pipefail
library="${1:?usage: no_call_cycles.sh libmpirpc.a [nm] [tsort]}"
nm="${2:-nm}"
tsort="${3:-tsort}"
[[ -f "$library" ]] || { echo "no library at $library" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# "object symbol": the strong definitions, and the uses.
"$nm" -A --defined-only "$library" |
  awk '$(NF-1) ~ /^[TDBR]$/ { split($1, f, ":"); print f[2], $NF }' >"$work/defined"
"$nm" -A -u "$library" | awk '{ split($1, f, ":"); print f[2], $NF }' >"$work/used"
# One line "caller callee" per pair of object files.
awk 'FNR == NR { if (!($2 in def)) def[$2] = $1; next }
     ($2 in def) && def[$2] != $1 { print $1, def[$2] }' "$work/defined" "$work/used" |
  sort -u >"$work/calls"
count=$(wc -l <"$work/calls")
if [[ "$count" -lt 20 ]]; then
  echo "only $count calls between object files found in $library: the check would pass blindly" >&2
  exit 1
fi
if ! "$tsort" "$work/calls" >/dev/null 2>"$work/loops"; then
  echo "object files of $library call each other (each part may use only the parts below it);" >&2
  echo "tsort names the files on each loop:" >&2
  grep -v "input contains a loop" "$work/loops" | sed 's/^tsort: /  /' >&2
  exit 1
fi
echo "no call cycles in $library ($count calls between object files)"
