#!/bin/sh
# The repository stands alone: no tracked file may depend on or point to
# anything outside it. Scans every file `git ls-files` lists (so build
# directories and untracked files are not scanned; binary files are
# skipped) and fails on any line that breaks one of these rules:
#
#   1. `shared/` nowhere: a clone has no sibling shared/ directory
#      (../shared/MODELS.md, shared/peer/...). The models, recipes and
#      numerics live in docs/, the PyTorch peer in bench/.
#   2. No absolute path of someone's machine: /work, /home, /root, /Users
#      or /mnt at the start of a path. System paths (/usr/bin/python3,
#      /usr/share/datasets/fashion-mnist, /proc/self/status, /dev/null)
#      are fine.
#   3. No /tmp path, except as the template of a fresh temporary file or
#      directory: a line naming /tmp must also hold the XXXXXX that
#      mkstemp, mkdtemp or mktemp replace (C tests' "/tmp/qat-test-XXXXXX",
#      shell tests' "${TMPDIR:-/tmp}/name.XXXXXX"). A fixed /tmp file in a
#      doc, script or source ("/tmp/bench.json") is a file that only
#      existed on one machine at one time.
#
# A path counts when it starts the line or follows a character that cannot
# be part of a longer path or word (so /usr/home or http://x/work do not).
# This script itself is not scanned (it has to spell the patterns).
# Usage: tests/test_standalone.sh [SOURCE_ROOT]   (exit 77: not a git checkout)
set -u
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 1
if ! command -v git >/dev/null 2>&1 || ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "standalone: skipped, $root is not a git checkout"
    exit 77
fi
cd "$(git rev-parse --show-toplevel)" || exit 1
self=tests/test_standalone.sh
lead='(^|[^[:alnum:]_.])'
tail='([^[:alnum:]_]|$)'
hits=$(mktemp "${TMPDIR:-/tmp}/qat-standalone.XXXXXX") || exit 1
trap 'rm -f "$hits"' EXIT INT TERM

scan() { # rule-name ERE [exempt-ERE]
    git ls-files -z | grep -z -v -x -F "$self" |
        xargs -0 grep -I -s -n -H -E -e "$2" -- 2>/dev/null |
        { if [ $# -ge 3 ]; then grep -v -E -e "$3"; else cat; fi; } |
        sed "s|^|$1: |" >>"$hits"
}

scan "shared/" 'shared/'
scan "machine path" "$lead/(work|home|root|Users|mnt)$tail"
scan "fixed /tmp path" "$lead/tmp$tail" 'XXXXXX'

files=$(git ls-files | grep -c -v -x -F "$self")
n=$(wc -l <"$hits")
if [ "$n" -gt 0 ]; then
    cat "$hits"
    echo "standalone: $n line(s) point outside the repository (rules in $self)"
    exit 1
fi
echo "standalone: $files tracked files, no reference outside the repository"
