#!/bin/sh
# The repository stands alone: no tracked file may depend on or point to
# anything outside it. Scans every file `git ls-files` lists, this one
# included (build directories and untracked files are not scanned; binary
# files are skipped), and fails on any line that breaks one of these rules:
#
#   1. No reference to a sibling directory of reference material: a clone
#      has only the repository. The models, recipes and numerics live in
#      docs/, the PyTorch peer in bench/.
#   2. No absolute path of someone's machine: a path that starts with one
#      of the home, work or mount roots listed in the pattern below. System
#      paths (/usr/bin/python3, /usr/share/datasets/fashion-mnist,
#      /proc/self/status, /dev/null) are fine.
#   3. No fixed path in the system's temporary directory: a line naming it
#      must also hold the XXXXXX that mkstemp, mkdtemp or mktemp replace (a
#      fresh temporary file or directory). A fixed temporary file named in
#      a doc, script or source only existed on one machine at one time.
#
# A path counts when it starts the line or follows a character that cannot
# be part of a longer path or word (so /usr/home or a path inside a URL do not).
# The patterns are spelled in pieces so this file passes its own scan.
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
sibling='shar''ed/'
machine='/(work|home|root|Users|mnt)'
tmpdir='/t''mp'
lead='(^|[^[:alnum:]_.])'
tail='([^[:alnum:]_]|$)'
hits=$(mktemp "${TMPDIR:-/tmp}/qat-standalone.XXXXXX") || exit 1
trap 'rm -f "$hits"' EXIT INT TERM

scan() { # rule-name ERE [exempt-ERE]
    git ls-files -z |
        xargs -0 grep -I -s -n -H -E -e "$2" -- 2>/dev/null |
        { if [ $# -ge 3 ]; then grep -v -E -e "$3"; else cat; fi; } |
        sed "s|^|$1: |" >>"$hits"
}

scan "reference material outside the repository" "$sibling"
scan "machine path" "$lead$machine$tail"
scan "fixed temporary path" "$lead$tmpdir$tail" 'XXXXXX'

files=$(git ls-files | wc -l)
n=$(wc -l <"$hits")
if [ "$n" -gt 0 ]; then
    cat "$hits"
    echo "standalone: $n line(s) point outside the repository (rules in $self)"
    exit 1
fi
echo "standalone: $files tracked files, no reference outside the repository"
