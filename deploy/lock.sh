#!/bin/sh
# Recompile requirements.lock from pyproject.toml and deploy/requirements.in, with the SHA-256
# of every file PyPI holds for each pinned version, then prove that the lock installs the way
# the Dockerfile installs it. pip-tools runs from a throwaway environment, never the project's.
#
#   deploy/lock.sh                          keep the current pins, add what is new
#   deploy/lock.sh --upgrade                move everything to the newest allowed versions
#   deploy/lock.sh --upgrade-package flask  move one package
set -eu
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# Only PyPI: local wheel directories or mirrors configured on this machine must not leak
# their files (and hashes) into the lock.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT || true

python3 -m venv "$work/tools"
"$work/tools/bin/pip" install --quiet pip-tools
CUSTOM_COMPILE_COMMAND="deploy/lock.sh" "$work/tools/bin/pip-compile" --quiet \
    --generate-hashes --allow-unsafe --strip-extras \
    --index-url https://pypi.org/simple --no-emit-index-url \
    --output-file requirements.lock "$@" pyproject.toml deploy/requirements.in

python3 -m venv "$work/check"
"$work/check/bin/pip" install --quiet --index-url https://pypi.org/simple \
    --require-hashes --no-deps --only-binary :all: -r requirements.lock
"$work/check/bin/pip" check
echo "requirements.lock is up to date and installs with --require-hashes"
