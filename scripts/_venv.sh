# Shared by scripts/demo and scripts/test: create .venv once, (re)install only when pyproject.toml or
# the requested extras change, so a second run is fast.
set -euo pipefail

ensure_venv() {
    local extras="$1"
    local py="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv with $py -m venv"
        "$py" -m venv .venv
        .venv/bin/python -m pip install -q --upgrade pip
    fi
    local stamp=".venv/.owlkit-installed"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $extras"
    if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return 0
    fi
    echo "==> installing owlkit$extras into .venv (torch==2.13.0 CPU; the gguf extra compiles llama.cpp, minutes)"
    .venv/bin/python -m pip install -q -e ".$extras"
    echo "$want" >> "$stamp"
}
