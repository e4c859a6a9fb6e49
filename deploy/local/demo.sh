#!/usr/bin/env bash
# `make demo`: the main job on embedded defaults. Generates a messy export, ingests it, and
# distils it through the OFFLINE teacher stand-in (tiqu teacher-stub), printing each report.
set -euo pipefail
cd "$(dirname "$0")/../.."

tiqu=.venv/bin/tiqu
python=.venv/bin/python
dir=var/demo
rows=${DEMO_ROWS:-1000}
port=${DEMO_STUB_PORT:-8900}
mkdir -p "$dir" var/log

echo "== 1. sample: $rows messy complaints =="
"$tiqu" sample --rows "$rows" --seed 7 --out "$dir/complaints.xlsx"

echo "== 2. ingest =="
"$tiqu" ingest "$dir/complaints.xlsx" --json > "$dir/dataset.json"
dataset=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["dataset_id"])' \
  "$dir/dataset.json")
"$tiqu" datasets show "$dataset"

echo "== 3. distill with the offline teacher stand-in (port $port) =="
"$tiqu" teacher-stub --labels "$dir/complaints.labels.jsonl" --port "$port" --latency-ms 20 \
  > var/log/teacher-stub.log 2>&1 &
stub=$!
trap 'kill "$stub" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  "$python" -c "import httpx,sys; httpx.get('http://127.0.0.1:$port/healthz').raise_for_status()" \
    2>/dev/null && break
  sleep 0.2
done
TIQU_TEACHER_BASE_URL="http://127.0.0.1:$port/v1" "$tiqu" distill "$dataset"
