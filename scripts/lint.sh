#!/usr/bin/env bash
# `npm run lint`: ESLint, Prettier (--check) and clang-format (--dry-run
# -Werror) over the code; each runs even when one before it failed, and the
# script fails if any did. `npm run format` (--write): Prettier and
# clang-format rewrite the files in place instead.
set -uo pipefail
cd "$(dirname "$0")/.."

C_FILES=(bpf/*.c bpf/include/*.h native/*.c test/fixtures/bpf/*.c)

if [ "${1:-}" = "--write" ]; then
  npx prettier --write --log-level warn . && clang-format -i "${C_FILES[@]}"
  exit
fi

failed=()
npx eslint --max-warnings 0 . || failed+=(eslint)
npx prettier --check --log-level warn . || failed+=(prettier)
clang-format --dry-run -Werror "${C_FILES[@]}" || failed+=(clang-format)
if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: ${failed[*]} failed (npm run format rewrites what Prettier and clang-format report)" >&2
  exit 1
fi
echo 'lint: eslint, prettier and clang-format found nothing'
