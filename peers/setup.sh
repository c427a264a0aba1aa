#!/usr/bin/env bash
# Builds the venvs of the peer servers the adapter tests drive (tests/policies/remote/):
#   peers/.venv-openpi   openpi's own server code (openpi-server, openpi-client)
#   peers/.venv-vlaeval  vla-eval 0.8.0
#   peers/.venv-vlaeval-bench  vla-eval 0.8.0 with torch (only when asked: vla_eval_bench),
#                        for the serving benchmark's head-to-head (harness/bench/serving.py)
# each from its pinned requirements file (every package pinned: `pip freeze`), from the
# package index only. Idempotent: a venv whose stamp matches its requirements file and
# interpreter is left as it is; otherwise it is rebuilt from scratch. Exits non-zero, saying
# which peer and why, when one cannot be installed.
#
# Usage: peers/setup.sh [openpi|vla_eval|vla_eval_bench ...]   (default: openpi vla_eval); PYTHON=... picks the
# interpreter (default python3.11, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"

build() {
    local name="$1" venv="$here/$2" requirements="$here/$1/${3:-requirements.txt}"
    local stamp="$venv/.peers-stamp" want log
    want="$(cat "$requirements" <("$python" -c 'import sys; print(sys.version)') | sha256sum)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "peers/setup.sh: $name: $2 is up to date"
        return 0
    fi
    echo "peers/setup.sh: $name: building $2 from $name/${3:-requirements.txt} ..."
    local start=$SECONDS
    rm -rf "$venv"
    log="$(mktemp)"
    if ! "$python" -m venv "$venv" >"$log" 2>&1 \
        || ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input --require-virtualenv -r "$requirements" >>"$log" 2>&1; then
        echo "peers/setup.sh: $name: cannot install its peer venv ($2); pip said:" >&2
        grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 30 >&2
        rm -rf "$venv" "$log"
        exit 1
    fi
    rm -f "$log"
    echo "$want" >"$stamp"
    echo "peers/setup.sh: $name: $2 built in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))"
}

peers=("$@")
[[ ${#peers[@]} -gt 0 ]] || peers=(openpi vla_eval)
for peer in "${peers[@]}"; do
    case "$peer" in
        openpi) build openpi .venv-openpi ;;
        vla_eval) build vla_eval .venv-vlaeval ;;
        # not built by default: torch for python -m harness.bench.serving's head-to-head
        vla_eval_bench) build vla_eval .venv-vlaeval-bench requirements-bench.txt ;;
        *) echo "peers/setup.sh: unknown peer $peer (openpi, vla_eval, vla_eval_bench)" >&2
           exit 2 ;;
    esac
done
