#!/usr/bin/env bash
# bench.sh — the machinery behind `make bench`, `make pgo`, `make bench-arm64`
# and `make soak`. Everything runs from the benchmarks/ module (its own go.mod,
# so the peer libraries never enter the core go.mod).
#
#   scripts/bench.sh bench   table + benchstat + profiles + SVG chart
#   scripts/bench.sh pgo     profile VineQueue's scenarios, merge into ./default.pgo
#   scripts/bench.sh arm64   cross-build for arm64 and smoke-run under qemu
#   scripts/bench.sh soak    sustained mixed load, delivery checked at the end
#
# Environment (all optional):
#   BENCH_OUT            output folder                     (default: bench-out)
#   BENCH_COUNT          runs per cell, interleaved        (default: 6; benchstat needs 6 for a 95% CI)
#   BENCHTIME            in-memory scenarios, items/run    (default: 2000000x)
#   BENCH_WAL_TIME       durable appends per run           (default: 1000x; peers fsync per item)
#   BENCH_RECOVERY_TIME  records per recovery run          (default: 200000x)
#   BENCH_FILTER         only libs matching this ERE       (default: all)
#   PGO                  auto: build with ./default.pgo if present; off; or a path
#   PGO_BENCHTIME        -benchtime of each profiled run   (default: 2s; PGO wants seconds of samples)
#   PGO_OUT              where pgo writes the merged profile (default: ./default.pgo)
#   SOAK_DURATION        soak length                       (default: 10m)
#   SOAK_REPORT          soak progress interval            (default: 10s)
#   QEMU                 arm64 runner                      (default: qemu-aarch64-static)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR="$ROOT/benchmarks"
OUT=${BENCH_OUT:-$ROOT/bench-out}
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
COUNT=${BENCH_COUNT:-6}
BENCHTIME=${BENCHTIME:-2000000x}
WAL_TIME=${BENCH_WAL_TIME:-1000x}
RECOVERY_TIME=${BENCH_RECOVERY_TIME:-200000x}
FILTER=${BENCH_FILTER:-.}
PGO=${PGO:-auto}
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da

# The in-memory scenarios, as named in benchmarks/harness_test.go.
QUEUE_SCENARIOS="1p Pp 64g 1024g e2e-1p e2e-Pp"
# The durable scenarios, as named in benchmarks/bench_wal_test.go.
WAL_SCENARIOS="wal-1p wal-64g"

log() { printf '%s\n' "$*" >&2; }

pgo_flag() {
	case "$PGO" in
	off) echo "-pgo=off" ;;
	auto) if [ -f "$ROOT/default.pgo" ]; then echo "-pgo=$ROOT/default.pgo"; else echo "-pgo=off"; fi ;;
	*) echo "-pgo=$PGO" ;;
	esac
}

build_tools() {
	mkdir -p "$OUT/profiles"
	local pgo
	pgo=$(pgo_flag)
	log "building benchmarks ($pgo) ..."
	(cd "$BENCH_DIR" && go test -c "$pgo" -o "$OUT/benchmarks.test" .)
	(cd "$BENCH_DIR" && go build -o "$OUT/benchtable" ./cmd/benchtable)
	echo "$pgo" >"$OUT/pgo.txt"
}

benchstat_bin() {
	if command -v benchstat >/dev/null 2>&1; then
		command -v benchstat
		return
	fi
	local bin
	bin="$(go env GOPATH)/bin/benchstat"
	if [ ! -x "$bin" ]; then
		log "installing benchstat@$BENCHSTAT_VERSION ..."
		go install "golang.org/x/perf/cmd/benchstat@$BENCHSTAT_VERSION" >&2
	fi
	echo "$bin"
}

# contenders KIND: the libs of that kind that are present, filtered.
contenders() {
	awk -F'\t' -v k="$1" '$1 == k && $3 == "" { print $2 }' "$OUT/contenders.tsv" | grep -E -- "$FILTER" || true
}

# run_one BENCH SCENARIO LIB BENCHTIME PROFILE(yes|no): one cell, one run,
# appended to bench.txt. Benchmarks run inside $OUT/tmp so that WAL files
# land on the same disk as the output, not in a tmpfs.
run_one() {
	local bench=$1 sc=$2 lib=$3 bt=$4 prof=$5
	local args=(-test.run '^$' -test.bench "^Benchmark$bench\$/^scenario=($sc)\$/^lib=($lib)\$"
		-test.benchtime "$bt" -test.count 1 -test.benchmem)
	if [ "$prof" = yes ]; then
		args+=(-test.cpuprofile "$OUT/profiles/$sc.$lib.cpu.pprof"
			-test.memprofile "$OUT/profiles/$sc.$lib.mem.pprof")
	fi
	if (cd "$OUT/tmp" && TMPDIR="$OUT/tmp" "$OUT/benchmarks.test" "${args[@]}") >"$OUT/last.txt" 2>&1 &&
		grep -q '^Benchmark' "$OUT/last.txt"; then
		grep -E '^(Benchmark|goos|goarch|pkg|cpu)' "$OUT/last.txt" >>"$OUT/bench.raw"
	else
		cat "$OUT/last.txt" >&2
		log "FAILED: $bench $sc $lib (rerun: cd $OUT/tmp && $OUT/benchmarks.test ${args[*]})"
		echo "$bench $sc $lib" >>"$OUT/failed.txt"
	fi
}

cmd_bench() {
	local t0=$SECONDS
	rm -rf "$OUT/profiles" "$OUT/tmp"
	mkdir -p "$OUT/profiles" "$OUT/tmp"
	build_tools
	local bs
	bs=$(benchstat_bin)
	"$OUT/benchtable" machine | tee "$OUT/machine.txt"
	echo "build: $(cat "$OUT/pgo.txt"); runs per cell: $COUNT (interleaved); in-memory $BENCHTIME, WAL $WAL_TIME, recovery $RECOVERY_TIME"
	VINEBENCH_LIST=1 "$OUT/benchmarks.test" >"$OUT/contenders.tsv"
	: >"$OUT/bench.raw"
	rm -f "$OUT/failed.txt"

	local queue_libs wal_libs recovery_libs round prof sc lib
	queue_libs=$(contenders queue)
	wal_libs=$(contenders wal)
	recovery_libs=$(contenders recovery)
	# Rounds outside, cells inside: every contender sees the same mix of
	# background load across the COUNT runs. Profiles come from round 1.
	for round in $(seq 1 "$COUNT"); do
		prof=no
		[ "$round" = 1 ] && prof=yes
		log "round $round/$COUNT ($((SECONDS - t0)) s)"
		for sc in $QUEUE_SCENARIOS; do
			for lib in $queue_libs; do run_one Queue "$sc" "$lib" "$BENCHTIME" "$prof"; done
		done
		for sc in $WAL_SCENARIOS; do
			for lib in $wal_libs; do run_one WAL "$sc" "$lib" "$WAL_TIME" "$prof"; done
		done
		for lib in $recovery_libs; do run_one Recovery recovery "$lib" "$RECOVERY_TIME" "$prof"; done
		# Adaptive vs fixed batching: simulated time, one simulation per cell.
		run_one Sink '.*' '.*' 1x no
	done
	# benchstat wants the header once, then all result lines.
	{ grep -E '^(goos|goarch|pkg|cpu)' "$OUT/bench.raw" | awk '!seen[$0]++'; grep '^Benchmark' "$OUT/bench.raw"; } >"$OUT/bench.txt"
	rm -rf "$OUT/tmp" "$OUT/last.txt"

	{
		echo
		echo "== benchstat (ns/item, items/s, allocs per cell; ± is the 95% confidence interval)"
		(cd "$OUT" && "$bs" bench.txt 2>&1) || true
	} >"$OUT/benchstat.txt"
	cat "$OUT/benchstat.txt"
	{
		cat "$OUT/machine.txt"
		echo "build: $(cat "$OUT/pgo.txt")"
		echo
		"$OUT/benchtable" table -contenders "$OUT/contenders.tsv" -svg "$OUT/throughput.svg" "$OUT/bench.txt"
	} >"$OUT/table.txt"
	echo
	echo "== VineQueue vs peers"
	cat "$OUT/table.txt"
	echo
	echo "== the real job: keyed 200-byte records to Kafka (kfake, its own process) until acked"
	# The runtime notes on stderr that the caller profile keeps its own
	# rate (startCallerProfile sets it first, on purpose): not news.
	(cd "$OUT" && VINEBENCH_REALJOB=1 "$OUT/benchmarks.test" -test.run '^TestRealJob$' -test.v -test.timeout 30m) \
		2> >(grep -v '^runtime: cannot set cpu profile rate' >&2) |
		tee "$OUT/realjob.txt" | grep -Ev '^(=== RUN|--- PASS|PASS)'
	echo
	echo "raw: $OUT/bench.txt  benchstat: $OUT/benchstat.txt  table: $OUT/table.txt  real job: $OUT/realjob.txt"
	echo "profiles: $OUT/profiles/<scenario>.<lib>.{cpu,mem}.pprof  (go tool pprof -top $OUT/benchmarks.test FILE)"
	echo "total: $((SECONDS - t0)) s"
	if [ -s "$OUT/failed.txt" ]; then
		echo "FAILED cells (see the output above):" >&2
		cat "$OUT/failed.txt" >&2
		return 1
	fi
}

cmd_pgo() {
	local t0=$SECONDS
	rm -rf "$OUT/pgo-profiles" "$OUT/tmp"
	mkdir -p "$OUT/pgo-profiles" "$OUT/tmp"
	build_tools
	local bt=${PGO_BENCHTIME:-2s} sc files=()
	for sc in $QUEUE_SCENARIOS; do
		log "profiling vinequeue, scenario $sc ($bt)"
		(cd "$OUT/tmp" && "$OUT/benchmarks.test" -test.run '^$' \
			-test.bench "^BenchmarkQueue\$/^scenario=$sc\$/^lib=vinequeue\$" \
			-test.benchtime "$bt" -test.count 1 \
			-test.cpuprofile "$OUT/pgo-profiles/$sc.cpu.pprof") | grep '^Benchmark'
		files+=("$OUT/pgo-profiles/$sc.cpu.pprof")
	done
	rm -rf "$OUT/tmp"
	local dst=${PGO_OUT:-$ROOT/default.pgo}
	go tool pprof -proto "${files[@]}" >"$OUT/default.pgo.new"
	mv "$OUT/default.pgo.new" "$dst"
	echo "wrote $dst from ${#files[@]} profiles (built $(cat "$OUT/pgo.txt")) in $((SECONDS - t0)) s"
	echo "before/after: PGO=off scripts/bench.sh bench  vs  scripts/bench.sh bench  (BENCH_FILTER=vinequeue for speed)"
}

cmd_arm64() {
	local t0=$SECONDS qemu=${QEMU:-qemu-aarch64-static}
	mkdir -p "$OUT/tmp-arm64"
	log "cross-building benchmarks for arm64 ..."
	(cd "$BENCH_DIR" && GOARCH=arm64 go test -c -o "$OUT/benchmarks.arm64.test" .)
	echo "arm64 under $qemu: a smoke run, timings under emulation are not figures"
	# Sink runs a simulation per iteration: one is enough for a smoke run.
	{
		(cd "$OUT/tmp-arm64" && TMPDIR="$OUT/tmp-arm64" "$qemu" "$OUT/benchmarks.arm64.test" \
			-test.run '^$' -test.bench '^Benchmark(Queue|WAL|Recovery)$' -test.benchtime 100x -test.count 1 -test.benchmem)
		(cd "$OUT/tmp-arm64" && TMPDIR="$OUT/tmp-arm64" "$qemu" "$OUT/benchmarks.arm64.test" \
			-test.run '^$' -test.bench '^BenchmarkSink$' -test.benchtime 1x -test.count 1)
	} 2>&1 | tee "$OUT/bench-arm64.txt"
	rm -rf "$OUT/tmp-arm64"
	if grep -qE '^(FAIL|panic)' "$OUT/bench-arm64.txt" || [ "$(grep -c '^PASS' "$OUT/bench-arm64.txt")" != 2 ]; then
		echo "arm64 smoke run FAILED" >&2
		return 1
	fi
	echo "arm64 smoke run passed in $((SECONDS - t0)) s"
}

cmd_soak() {
	(cd "$BENCH_DIR" && go run ./cmd/soak -duration "${SOAK_DURATION:-10m}" -report "${SOAK_REPORT:-10s}")
}

case "${1:-}" in
bench) cmd_bench ;;
pgo) cmd_pgo ;;
arm64) cmd_arm64 ;;
soak) cmd_soak ;;
*)
	echo "usage: $0 bench|pgo|arm64|soak" >&2
	exit 2
	;;
esac
