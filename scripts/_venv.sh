# Shared by scripts/demo and scripts/test: create .venv once, (re)install only when pyproject.toml or
# the requested extras change, so a second run is fast.
set -euo pipefail

ensure_venv() {
    local extras="$1"
    local py="${PYTHON:-python3}"
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        rm -rf .venv  # a half-made .venv (e.g. venv without ensurepip) would fool every later run
        echo "==> creating .venv with $py -m venv"
        if ! "$py" -m venv .venv; then
            rm -rf .venv
            echo "error: '$py -m venv' failed; on Debian: apt-get install python3-venv" >&2
            exit 1
        fi
        .venv/bin/python -m pip install -q --upgrade pip
    fi
    local stamp=".venv/.owlkit-installed"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
    if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return 0
    fi
    if [[ "$extras" == *gguf* ]] && ! command -v c++ >/dev/null 2>&1; then
        echo "error: the gguf extra compiles llama.cpp and needs a C++ compiler: apt-get install build-essential cmake" >&2
        exit 1
    fi
    echo "==> installing owlkit$extras into .venv (torch==2.13.0; the gguf extra compiles llama.cpp, minutes)"
    .venv/bin/python -m pip install -q -e ".$extras"
    echo "$want" >> "$stamp"
}
