package main

import (
	"bytes"
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkQueue/scenario=1p/lib=vinequeue-2    1000000   5.0 ns/op   200000000 items/s   5.0 ns/item   0.001 allocs/item   0 B/op   0 allocs/op
BenchmarkQueue/scenario=1p/lib=vinequeue-2    1000000   7.0 ns/op   142857142 items/s   7.0 ns/item   0.001 allocs/item   0 B/op   0 allocs/op
BenchmarkQueue/scenario=1p/lib=vinequeue-2    1000000   6.0 ns/op   166666666 items/s   6.0 ns/item   0.001 allocs/item   0 B/op   0 allocs/op
BenchmarkQueue/scenario=1p/lib=chan-2         1000000   30 ns/op    33333333 items/s    30 ns/item    0 allocs/item   0 B/op   0 allocs/op
BenchmarkQueue/scenario=1p/lib=lscq-2         1000000   12 ns/op    83333333 items/s    12 ns/item    0 allocs/item   0 B/op   0 allocs/op
BenchmarkQueue/scenario=64g/lib=chan-2        1000000   40 ns/op    25000000 items/s    40 ns/item    0 allocs/item   0 B/op   0 allocs/op
BenchmarkWAL/scenario=wal-1p/lib=tidwall-wal-2   1000   600000 ns/op   0.17 MB/s   1666 items/s   600000 ns/item   550 p50-µs   1500 p99-µs   625 B/op   1 allocs/op
--- SKIP: BenchmarkQueue/scenario=1p/lib=zenq
PASS
`

func TestParseAndTable(t *testing.T) {
	r := newResults()
	if err := r.parse(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	k := key{"Queue", "1p", "vinequeue"}
	if got, _ := r.nsPerItem(k); got != 6 {
		t.Fatalf("median ns/item = %v, want 6", got)
	}
	if lib, v := r.bestPeer(scenarioID{"Queue", "1p"}); lib != "lscq" || v != 83333333 {
		t.Fatalf("best peer = %s %v", lib, v)
	}
	if r.procs != 2 {
		t.Fatalf("procs = %d", r.procs)
	}
	list, err := parseContenders(strings.NewReader("queue\tzenq\tdoes not link\tz\nqueue\tchan\t\tbuffered\n"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	writeTable(&out, r, list)
	s := out.String()
	for _, want := range []string{"×1.00 (best peer)", "×2.00", "ABSENT [queue]: does not link", "zenq", "absent", "166.7M", "0.17", "1.50ms"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	var svg bytes.Buffer
	writeChart(&svg, r, "machine")
	if !strings.Contains(svg.String(), "<polyline") || !strings.HasSuffix(strings.TrimSpace(svg.String()), "</svg>") {
		t.Errorf("chart:\n%s", svg.String())
	}
}

func TestParseContendersRejectsShortLines(t *testing.T) {
	if _, err := parseContenders(strings.NewReader("queue\tchan\n")); err == nil {
		t.Fatal("want an error for a 2-field line")
	}
}
