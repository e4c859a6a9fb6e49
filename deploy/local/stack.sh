#!/usr/bin/env bash
# `make up` / `make down` / `make ps`: every tiqu process on this machine under honcho, in the
# background. up: writes RUN_DIR/Procfile (deploy/local/procfile.py), starts honcho, records its
# pid in RUN_DIR/honcho.pid; each process logs to LOG_DIR/<name>.log, honcho to
# LOG_DIR/honcho.log. down: stops honcho, which stops every process (SIGTERM, SIGKILL after 5 s).
set -euo pipefail
cd "$(dirname "$0")/../.."

RUN_DIR=${RUN_DIR:-var/run}
LOG_DIR=${LOG_DIR:-var/log}
PROCFILE=${PROCFILE:-Procfile}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-30}
VENV=${VENV:-.venv}
pidfile=$RUN_DIR/honcho.pid

# Alive and not a zombie waiting to be reaped.
alive() {
  local pid=$1 state
  kill -0 "$pid" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo "?")
  [ "$state" != "Z" ]
}

descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

up() {
  local pid
  if pid=$(running_pid); then
    echo "already running (honcho pid $pid); \`make down\` stops it"
    return 0
  fi
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  "$VENV/bin/python" deploy/local/procfile.py --procfile "$PROCFILE" --out "$RUN_DIR/Procfile" \
    --log-dir "$LOG_DIR"
  # A session of its own: a Ctrl-C in this terminal does not reach it, only `make down` does.
  # The pid is written from inside, so that it is honcho's whatever setsid does.
  rm -f "$pidfile"
  nohup setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" \
    "$VENV/bin/honcho" start --no-colour -f "$RUN_DIR/Procfile" -d . \
    >>"$LOG_DIR/honcho.log" 2>&1 </dev/null &
  for _ in $(seq 50); do
    [ -s "$pidfile" ] && break
    sleep 0.1
  done
  pid=$(cat "$pidfile" 2>/dev/null || true)
  sleep 1
  if [ -z "$pid" ] || ! alive "$pid"; then
    rm -f "$pidfile"
    echo "honcho exited at once; the end of $LOG_DIR/honcho.log:" >&2
    tail -n 20 "$LOG_DIR/honcho.log" >&2
    return 1
  fi
  echo "started (honcho pid $pid): $(grep -c '^[A-Za-z0-9_-]*:' "$RUN_DIR/Procfile") processes;" \
    "logs in $LOG_DIR/<name>.log, \`make down\` stops them"
}

down() {
  local pid waited=0
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    echo "not running"
    return 0
  fi
  # honcho runs each process in a session of its own: remember the whole tree, in case honcho
  # has to be killed before it could stop them all.
  local tree
  tree=$(descendants "$pid")
  kill -TERM "$pid"
  while alive "$pid"; do
    if [ "$waited" -ge $((STOP_TIMEOUT_S * 10)) ]; then
      echo "honcho (pid $pid) did not stop in ${STOP_TIMEOUT_S}s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  local signal child left
  for signal in TERM KILL; do
    left=
    for child in $tree; do
      if alive "$child"; then
        kill "-$signal" "$child" 2>/dev/null || true
        left=1
      fi
    done
    [ -z "$left" ] && break
    [ "$signal" = TERM ] && sleep 5
  done
  rm -f "$pidfile"
  echo "stopped"
}

ps_() {
  local pid
  if pid=$(running_pid); then
    echo "running (honcho pid $pid):"
    grep -o '^[A-Za-z0-9_-]*:' "$RUN_DIR/Procfile" | tr -d ':' | sed 's/^/  /'
  else
    echo "not running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  ps) ps_ ;;
  *)
    echo "usage: $0 up|down|ps" >&2
    exit 2
    ;;
esac
