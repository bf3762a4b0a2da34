#!/usr/bin/env bash
# Builds the Go client of fedreg and runs it against two live registries.
#
#   clients/go/run.sh [FEDREG_BINARY]
#
# The Go stubs are generated here from proto/ (the one source of truth)
# with protoc, protoc-gen-go and protoc-gen-go-grpc, and built with the Go
# packages Debian ships (GOPATH mode, no module download): golang-go,
# protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc,
# golang-google-protobuf-dev, golang-google-grpc-dev and
# golang-github-golang-protobuf-1-5-dev (grpc-go 1.33 decodes messages with
# github.com/golang/protobuf, whose 1.3 version, the one the grpc package
# pulls in, cannot decode the messages protoc-gen-go writes). When they are
# missing, they are installed under CI=true (as root, with apt-get);
# otherwise, or when that fails, the script says so and exits 0 without
# running the client.
#
# Two `fedreg serve` processes (SQLite, loopback ports, temporary data
# directories) are started and stopped by the script. FEDREG_BINARY
# defaults to target/debug/fedreg, built when missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/debug/fedreg}
packages="golang-go protobuf-compiler protoc-gen-go protoc-gen-go-grpc golang-google-protobuf-dev golang-google-grpc-dev golang-github-golang-protobuf-1-5-dev"
gocode=/usr/share/gocode

have_tools() {
    command -v go >/dev/null && command -v protoc >/dev/null &&
        command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null &&
        [ -d "$gocode/src/google.golang.org/grpc" ] &&
        [ -d "$gocode/src/google.golang.org/protobuf" ] &&
        [ -f "$gocode/src/github.com/golang/protobuf/proto/registry.go" ] &&
        [ -f /usr/include/google/protobuf/timestamp.proto ]
}

if ! have_tools; then
    if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Go client: installing $packages"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null; }; then
            echo "SKIPPED: Go client: apt-get could not install $packages"
            exit 0
        fi
    else
        echo "SKIPPED: Go client: Go or the protobuf generators are not installed (apt-get install $packages; under CI=true as root this script installs them)"
        exit 0
    fi
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Stubs from proto/, into GOPATH at the import path of go_package.
mkdir -p "$work/src/fedreg-client"
(cd "$root/proto" && protoc -I . -I /usr/include \
    --go_out="$work/src" --go_opt=paths=import \
    --go-grpc_out="$work/src" --go-grpc_opt=paths=import \
    fedreg/v1/*.proto)
cp "$root/clients/go/main.go" "$work/src/fedreg-client/"
# Go's build cache stays where it is (by default ~/.cache/go-build): with
# it, building the client takes seconds instead of a minute or more.
export GO111MODULE=off GOPATH="$work:$gocode" GOFLAGS=
(cd "$work/src/fedreg-client" && go vet . && go build -o "$work/fedreg-client" .)
echo "Go client built: $(go version | cut -d' ' -f3), grpc-go $(sed -n 's/^const Version = "\(.*\)"/\1/p' "$gocode/src/google.golang.org/grpc/version.go")"

if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --quiet --bin fedreg)
fi

# Starts `fedreg serve` named $1 with data in $work/$1; sets addr and token.
serve() {
    local name=$1 dir=$work/$1
    mkdir -p "$dir"
    : >"$dir/log"
    env -u FEDREG_DATABASE_URL -u FEDREG_LISTEN -u FEDREG_DATA_DIR FEDREG_LOG=info \
        "$bin" --data-dir "$dir" serve --listen 127.0.0.1:0 --name "$name" 2>"$dir/log" &
    pids+=($!)
    addr=
    for _ in $(seq 1 300); do
        addr=$(sed -n 's/^fedreg listening on //p' "$dir/log" | head -n 1)
        [ -n "$addr" ] && break
        kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/log" >&2; echo "fedreg serve $name exited" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$addr" ] || { cat "$dir/log" >&2; echo "fedreg serve $name did not listen within 30 s" >&2; exit 1; }
    token=$(cat "$dir/admin-token")
}

serve goa
addr_a=$addr token_a=$token
serve gob
addr_b=$addr token_b=$token
echo "fedreg serving at $addr_a (A) and $addr_b (B)"
"$work/fedreg-client" -a "$addr_a" -a-token "$token_a" -b "$addr_b" -b-token "$token_b"
echo "Go client: passed"
