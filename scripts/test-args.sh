# test-args.sh - sourced by the Python test scripts (test-python.sh,
# test-python-asan.sh, test-python-valgrind.sh): the options they share and
# the interpreter check.  The sourcing script sets USAGE_END, the last line
# of its usage comment (which starts on line 2).

usage() { sed -n "2,${USAGE_END}p" "$0" | sed 's/^# \{0,1\}//'; }

# common_arg WORDS...: takes the first word, one of the shared options
# (--python PY, --build-dir DIR, either also as --opt=value; -h/--help), and
# sets ARG_SHIFT to how many words it used.  Anything else is an error:
# usage on stderr, exit 2.
common_arg() {
  case "$1" in
    --python|--build-dir)
      [ $# -ge 2 ] || { echo "$(basename "$0"): $1 needs a value" >&2; exit 2; } ;;
  esac
  case "$1" in
    --python) PYTHON=$2; ARG_SHIFT=2 ;;
    --python=*) PYTHON=${1#*=}; ARG_SHIFT=1 ;;
    --build-dir) BUILD_DIR=$2; ARG_SHIFT=2 ;;
    --build-dir=*) BUILD_DIR=${1#*=}; ARG_SHIFT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
}

# Exits unless $PYTHON runs; sets PYVER to its X.Y.
python_version() {
  command -v "$PYTHON" >/dev/null || { echo "$(basename "$0"): no interpreter '$PYTHON'" >&2; exit 1; }
  PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
}
