#!/usr/bin/env bash
# `buf breaking` for `make lint`: the protos must stay wire- and source-compatible (buf.yaml's
# FILE rules) with a base, chosen as:
#   $BUF_AGAINST (any git revision), else the last release tag (v*), else main (the local
#   branch, else origin/main). When HEAD is that base itself (a checkout of main), its first
#   parent is the base instead, so the newest commit on main is checked too.
# The base's proto/ and buf.yaml are taken with `git archive`, which works the same in a
# clone, a worktree or a detached checkout. Without any base (no git, a one-commit shallow
# clone) it says so and passes.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-.tools/node_modules/.bin/buf}

skip() { echo "buf breaking: skipped ($1)"; exit 0; }

git rev-parse --git-dir >/dev/null 2>&1 || skip "not a git checkout"
head=$(git rev-parse HEAD)
resolve() { git rev-parse --verify --quiet "$1^{commit}" 2>/dev/null || true; }

if [[ -n "${BUF_AGAINST:-}" ]]; then
  name=$BUF_AGAINST
else
  name=$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || true)
  if [[ -z "$name" ]]; then
    name=main
    [[ -n "$(resolve main)" ]] || name=origin/main
  fi
fi
base=$(resolve "$name")
[[ -n "$base" ]] || skip "no revision '$name' here"
if [[ "$base" == "$head" && -z "${BUF_AGAINST:-}" ]]; then
  base=$(resolve HEAD~1)
  [[ -n "$base" ]] || skip "HEAD is $name and has no parent here"
  name="$name~1 (HEAD is $name)"
fi
git cat-file -e "$base:buf.yaml" 2>/dev/null || skip "$name has no buf.yaml"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" buf.yaml proto | tar -x -C "$tmp"
echo "buf breaking: against $name ($(git rev-parse --short "$base"))"
"$BUF" breaking --against "$tmp"
