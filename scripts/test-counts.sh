# test-counts.sh - sourced by the Python test scripts: counts from the logs
# of unittest and pytest runs, as "passed failed other".

# From unittest's closing lines ("Ran N tests", "OK (skipped=3)",
# "FAILED (failures=1, errors=2, skipped=3)").
unittest_counts() {  # log
  local log=$1 ran f e s x u tail_line
  if ! grep -Eq '^Ran [0-9]+ tests?' "$log"; then
    # No closing lines (crash or timeout): count the verbose per-test lines.
    f=$(grep -Ec '\.\.\. (FAIL|ERROR)$' "$log" || true)
    s=$(grep -Ec "\.\.\. (skipped|expected failure)" "$log" || true)
    echo "$(grep -Ec '\.\.\. ok$' "$log" || true) $((f + 1)) $s"
    return
  fi
  ran=$(grep -Eo '^Ran [0-9]+ tests?' "$log" | tail -1 | grep -Eo '[0-9]+')
  tail_line=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$log" | tail -1 || true)
  f=$(grep -Eo '(\(|, )failures=[0-9]+' <<<"$tail_line" | grep -Eo '[0-9]+' || echo 0)
  e=$(grep -Eo '(\(|, )errors=[0-9]+' <<<"$tail_line" | grep -Eo '[0-9]+' || echo 0)
  s=$(grep -Eo '(\(|, )skipped=[0-9]+' <<<"$tail_line" | grep -Eo '[0-9]+' || echo 0)
  x=$(grep -Eo 'expected failures=[0-9]+' <<<"$tail_line" | grep -Eo '[0-9]+' || echo 0)
  u=$(grep -Eo 'unexpected successes=[0-9]+' <<<"$tail_line" | grep -Eo '[0-9]+' || echo 0)
  echo "$((ran - f - e - s - x - u)) $((f + e + u)) $((s + x))"
}

# From pytest's summary line; a non-zero rc with no failure counts one.
pytest_counts() {  # log rc
  local last p f e x s
  last=$(grep -E '[0-9]+ (passed|failed|error)' "$1" | tail -1 || true)
  p=$(grep -Eo '[0-9]+ passed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  f=$(grep -Eo '[0-9]+ failed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  e=$(grep -Eo '[0-9]+ errors?' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  x=$(grep -Eo '[0-9]+ xfailed' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  s=$(grep -Eo '[0-9]+ skipped' <<<"$last" | grep -Eo '[0-9]+' || echo 0)
  f=$((f + e))
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  echo "$p $f $((x + s))"
}
