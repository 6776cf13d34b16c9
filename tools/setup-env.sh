# Shared by ./run and ./test: find a Python, make the project's virtual environment,
# install what the system must provide. Sourced, not run; every step says what it does.

ASYNCQ_VENV="${ASYNCQ_VENV:-.venv}"

say() { echo "asyncq: $*" >&2; }
die() { say "$*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# apt_install PACKAGE...: as root on Debian/Ubuntu install them; otherwise stop with one line.
apt_install() {
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing $* (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$@" >/dev/null
  else
    die "this needs the system packages: $*; install them (sudo apt-get install $*) and run again"
  fi
}

find_python() {
  local python
  for python in "${PYTHON:-}" python3 python; do
    [ -n "$python" ] && command -v "$python" >/dev/null 2>&1 || continue
    if "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$python"; return 0
    fi
  done
  die "asyncq needs Python 3.10 or newer as python3 (or set PYTHON=/path/to/python)"
}

# make_venv [fresh]: the project's virtual environment in $ASYNCQ_VENV, made anew when asked.
make_venv() {
  local python; python=$(find_python)
  if [ "${1:-}" = fresh ] && [ -d "$ASYNCQ_VENV" ]; then
    say "making a new virtual environment in $ASYNCQ_VENV"
    rm -rf "$ASYNCQ_VENV"
  fi
  if [ ! -x "$ASYNCQ_VENV/bin/python" ]; then
    if ! "$python" -m venv "$ASYNCQ_VENV" >/dev/null 2>&1; then
      rm -rf "$ASYNCQ_VENV"
      # Debian and Ubuntu ship venv's pip bootstrap apart from python3.
      local version; version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${version}-venv"
      "$python" -m venv "$ASYNCQ_VENV" || die "could not make a virtual environment in $ASYNCQ_VENV"
    fi
  fi
  # shellcheck disable=SC1091
  . "$ASYNCQ_VENV/bin/activate"
}

# pip_install ARGS...: quietly, within the versions pinned in constraints.txt.
pip_install() {
  say "pip install $* (in $ASYNCQ_VENV)"
  python -m pip install -q --disable-pip-version-check -c constraints.txt "$@"
}
