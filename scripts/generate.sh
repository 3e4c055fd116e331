#!/usr/bin/env bash
# Regenerates the TypeScript and Go SDK code from proto/ (buf.gen.yaml) with pinned local plugins.
#   scripts/generate.sh          regenerate in place
#   scripts/generate.sh --check  regenerate, then fail if that changed anything committed (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2

[ -x node_modules/.bin/buf ] && [ -x node_modules/.bin/protoc-gen-es ] || npm ci --no-audit --no-fund >&2

# go install is a no-op when the pinned version is already built; the version file makes a
# change of pin rebuild.
tools=.tools/bin
stamp=.tools/versions
want="$PROTOC_GEN_GO_VERSION $PROTOC_GEN_GO_GRPC_VERSION"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x $tools/protoc-gen-go ] || [ ! -x $tools/protoc-gen-go-grpc ]; then
  mkdir -p $tools
  GOBIN="$PWD/$tools" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  GOBIN="$PWD/$tools" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
  echo "$want" > "$stamp"
fi

npx buf generate

if [ "${1:-}" = "--check" ]; then
  generated=(sdks/typescript/src/gen sdks/go/gen)
  if ! git diff --quiet -- "${generated[@]}" || [ -n "$(git ls-files --others --exclude-standard -- "${generated[@]}")" ]; then
    echo "generated SDK code differs from proto/: run scripts/generate.sh and commit the result" >&2
    git status --short -- "${generated[@]}" >&2
    exit 1
  fi
fi
