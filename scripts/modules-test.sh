#!/usr/bin/env bash
# modules-test.sh — a user's module gets contrib/kafka the way `go get` gives
# it: from a module proxy (here the file:// one built from ./releases by
# scripts/withproxy.sh), with no replace and no go.work, and builds.
# make modules-test runs it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
if [ "${1:-}" != --inside ]; then
	exec "$ROOT/scripts/withproxy.sh" "$0" --inside
fi

want=$(awk '!/^[[:space:]]*(#|$)/ { v = $1 } END { print v }' "$ROOT/releases")
if [ -z "$want" ]; then
	echo "modules-test: no release in releases" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
export GOWORK=off
cat >go.mod <<'MOD'
module example.com/user

go 1.26.0
MOD
cat >main.go <<'GO'
package main

import (
	"log"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/vineroute/vinequeue"
	"github.com/vineroute/vinequeue/contrib/kafka"
)

func main() {
	producer, err := kafka.NewProducer(kafka.Config{
		Topic:      "events",
		ClientOpts: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:9092")},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer producer.Close()
	q, err := vinequeue.New(vinequeue.Config[kafka.Record]{Send: producer.SendRecords})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	key := []byte("user-1")
	if err := q.EnqueueKey(kafka.QueueKey(key), kafka.Record{Key: key, Value: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
}
GO
echo "modules-test: go get github.com/vineroute/vinequeue/contrib/kafka@latest (GOPROXY=${GOPROXY%%,*}, GOWORK=off)"
"$GO" get github.com/vineroute/vinequeue/contrib/kafka@latest
"$GO" mod tidy
got_kafka=$("$GO" list -m -f '{{.Version}}' github.com/vineroute/vinequeue/contrib/kafka)
got_core=$("$GO" list -m -f '{{.Version}}' github.com/vineroute/vinequeue)
if [ "$got_kafka" != "$want" ] || [ "$got_core" != "$want" ]; then
	echo "modules-test: resolved contrib/kafka $got_kafka and the core $got_core, want $want (the last release)" >&2
	exit 1
fi
if grep -q '^replace' go.mod; then
	echo "modules-test: go.mod has a replace" >&2
	exit 1
fi
"$GO" build -o /dev/null .
"$GO" vet .
echo "modules-test: ok: contrib/kafka $got_kafka and the core $got_core from the module proxy, built with no replace and no go.work"
