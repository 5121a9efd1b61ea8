package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vineroute/vinequeue/wal"
)

func runT(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// makeWAL writes 3 segments of framed JSON records and returns the dir and
// the first segment's path.
func makeWAL(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 60; i++ {
		var p []byte
		for j := 0; j < 3; j++ {
			p = wal.AppendFrame(p, fmt.Appendf(nil, `{"n":%d,"j":%d,"pad":"%x"}`, i, j, rng.Uint64()))
		}
		if _, err := l.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) < 2 {
		t.Fatalf("want several segments, got %v", segs)
	}
	return dir, segs[0]
}

func TestInspectVerifyDumpRepair(t *testing.T) {
	dir, first := makeWAL(t)

	code, out, _ := runT(t, "inspect", dir)
	if code != 0 || !strings.Contains(out, "ack mark 0") || !strings.Contains(out, "snappy") {
		t.Fatalf("inspect: %d\n%s", code, out)
	}
	code, out, _ = runT(t, "inspect", "-json", dir)
	var r wal.Report
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || len(r.Segments) < 2 {
		t.Fatalf("inspect -json: %d\n%s", code, out)
	}
	if code, out, _ = runT(t, "verify", dir); code != 0 || !strings.HasPrefix(out, "ok") {
		t.Fatalf("verify of an intact dir: %d\n%s", code, out)
	}
	code, out, _ = runT(t, "dump", "-items", dir)
	if code != 0 || strings.Count(out, "\n") != 180 || !strings.Contains(out, `{"n":59,"j":2`) {
		t.Fatalf("dump -items: %d, %d lines\n%s", code, strings.Count(out, "\n"), out)
	}
	code, out, _ = runT(t, "dump", "-json", "-from", "60", dir)
	var rec dumpRecord
	if code != 0 || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &rec) != nil || rec.ID != 60 || (rec.Base64 == nil && rec.Text == nil) {
		t.Fatalf("dump -json -from 60: %d\n%s", code, out)
	}

	// Damage the third record of the first segment.
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	var off int
	for i, seen := 32, 0; i < len(data); i += 8 {
		if data[i] == 3 && data[i+1] == 0 { // record id 3 (little-endian)
			off = i + 30
			break
		}
		_ = seen
	}
	if off == 0 {
		t.Fatal("record 3 not found")
	}
	data[off] ^= 0x20
	if err := os.WriteFile(first, data, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runT(t, "verify", dir)
	if code != 1 || !strings.Contains(out, "damaged at offset") || !strings.Contains(out, "intact records up to id 2") {
		t.Fatalf("verify of a damaged dir: %d\n%s", code, out)
	}
	code, out, errOut := runT(t, "repair", dir)
	if code != 0 || !strings.Contains(out, "repaired") {
		t.Fatalf("repair: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ = runT(t, "verify", dir); code != 0 {
		t.Fatalf("verify after repair: %d\n%s", code, out)
	}
	code, out, _ = runT(t, "inspect", dir)
	if code != 0 || !strings.Contains(out, "quarantined: ") || !strings.Contains(out, "repaired") {
		t.Fatalf("inspect after repair: %d\n%s", code, out)
	}
	code, out, _ = runT(t, "dump", dir)
	if code != 0 || !strings.Contains(out, " gap ") || strings.Contains(out, " id 3 ") {
		t.Fatalf("dump after repair: %d\n%s", code, out)
	}
	if code, out, _ = runT(t, "repair", dir); code != 0 || !strings.Contains(out, "nothing to repair") {
		t.Fatalf("second repair: %d\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"verify"}, {"inspect", "a", "b"}, {"dump", "-nope", "x"}, {"verify", "/does/not/exist"}} {
		if code, _, _ := runT(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

func TestRepairRefusesALockedDir(t *testing.T) {
	dir, _ := makeWAL(t)
	l, err := wal.Open(dir, wal.Options{SegmentSize: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	code, _, errOut := runT(t, "repair", dir)
	if code != 2 || !strings.Contains(errOut, "locked") {
		t.Fatalf("repair of a locked dir: %d %s", code, errOut)
	}
}
