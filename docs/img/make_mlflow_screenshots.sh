#!/usr/bin/env bash
# The MLflow screenshots of docs/mlflow.md, reproducibly: a small offline study (sklearn's
# digits, 2 strategies x 2 seeds, the quickstart's settings) run by the workflow against a local
# `mlflow server` (SQLite backend), then headless-Chromium screenshots of its UI.
#
#   bash docs/img/make_mlflow_screenshots.sh        # from the repository root; ~5 min on 2 cores
#
# Needs: snakemake, mlflow, aiohttp, chromium (Debian: apt-get install chromium), optionally
# pngquant and optipng to shrink the PNGs. SHOT_WAIT=15 gives a slow machine more time per page.
# Everything it writes besides docs/img/mlflow_*.png goes to results/mlflow_demo/ and
# results/mlflow_demo_server/ (git-ignored); rerunning starts afresh.
set -euo pipefail

PORT=${PORT:-5055}
URL="http://127.0.0.1:$PORT"
STUDY=mlflow_demo
SERVER_DIR="$PWD/results/${STUDY}_server"
IMG="$PWD/docs/img"

rm -rf "results/$STUDY" "$SERVER_DIR"
mkdir -p "$SERVER_DIR"

# 1. a local tracking server: SQLite for runs, a folder for artifacts (served by the server)
setsid mlflow server --backend-store-uri "sqlite:///$SERVER_DIR/mlflow.db" \
    --artifacts-destination "$SERVER_DIR/artifacts" \
    --host 127.0.0.1 --port "$PORT" --workers 1 > "$SERVER_DIR/server.log" 2>&1 &
SERVER=$!
stop_server() {  # the server and its workers (MLflow 3's job consumers outlive a SIGTERM)
    kill -- -"$SERVER" 2> /dev/null || return 0
    sleep 3
    kill -9 -- -"$SERVER" 2> /dev/null || true
}
trap stop_server EXIT
for _ in $(seq 60); do
    curl -sf "$URL/health" > /dev/null && break
    sleep 1
done

# 2. the study: the quickstart (config/config.yaml) cut to 2 strategies x 2 seeds
snakemake --cores 2 --config study=$STUDY "strategies=[random,ask-n-learn-vwcc]" \
    "seeds=[0,1]" tracking_uri=$URL

# 3. the screenshots: headless Chromium driven over the DevTools protocol (see the script)
SHOT_WAIT=${SHOT_WAIT:-8} python docs/img/mlflow_screenshots.py "$URL" "$STUDY" "$IMG"

# 4. smaller files: 256-colour palette, then lossless recompression
for f in "$IMG"/mlflow_*.png; do
    if command -v pngquant > /dev/null; then pngquant --force --skip-if-larger --output "$f" 256 "$f" || true; fi
    if command -v optipng > /dev/null; then optipng -quiet -o2 "$f"; fi
done
ls -l "$IMG"/mlflow_*.png
