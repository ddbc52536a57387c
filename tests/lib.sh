# Sourced by the scripts that install or build what the tests run, cached
# under $CACHE. Each script defines:
#   say     prints a progress line on stderr;
#   warm    true once what it installs is there and works;
#   result  prints what the script gives on stdout (a path per line).

CACHE="${STEWARD_CACHE:-$HOME/.cache/steward}"

# Empty as root, `sudo` otherwise: for apt-get.
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi

# Exits with the result when warm. Otherwise takes the lock file `$1`:
# test runs may call a script at once, and only one of them installs; the
# others wait, then find it warm.
exit_if_warm_else_lock() {
  if warm; then result; exit 0; fi
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  flock 9
  if warm; then result; exit 0; fi
}

# Runs the command `$2...` with its output appended to $LOG. On failure,
# shows the log's last `$1` lines and exits with the command's status.
run_logged() {
  local lines="$1" rc
  shift
  set +e
  ("$@") >>"$LOG" 2>&1
  rc=$?
  set -e
  if (( rc != 0 )); then
    say "FAILED (exit $rc); last lines of $LOG:"
    tail -n "$lines" "$LOG" >&2
    exit "$rc"
  fi
}
