package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/stretchr/testify/require"
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
	return makeWALN(t, 60)
}

// makeWALN is makeWAL with n records.
func makeWALN(t *testing.T, n int) (string, string) {
	t.Helper()
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < n; i++ {
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
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "ack mark 0")
	require.Contains(t, out, "snappy")
	code, out, _ = runT(t, "inspect", "-json", dir)
	var r wal.Report
	require.Equal(t, 0, code, out)
	require.NoError(t, json.Unmarshal([]byte(out), &r))
	require.GreaterOrEqual(t, len(r.Segments), 2)
	code, out, _ = runT(t, "verify", dir)
	require.Equal(t, 0, code, out)
	require.True(t, strings.HasPrefix(out, "ok"), out)
	code, out, _ = runT(t, "dump", "-items", dir)
	require.Equal(t, 0, code)
	require.Equal(t, 180, strings.Count(out, "\n"), out)
	require.Contains(t, out, `{"n":59,"j":2`)
	code, out, _ = runT(t, "dump", "-json", "-from", "60", dir)
	var rec dumpRecord
	require.Equal(t, 0, code)
	require.Equal(t, 1, strings.Count(out, "\n"), out)
	require.NoError(t, json.Unmarshal([]byte(out), &rec))
	require.Equal(t, uint64(60), rec.ID)
	require.True(t, rec.Base64 != nil || rec.Text != nil)

	// Damage the third record of the first segment: record 3 alone is
	// lost (the records after it are intact and kept).
	data, err := os.ReadFile(first)
	require.NoError(t, err)
	off := 0
	_, err = wal.ReadSegment(first, func(rec wal.Record) error {
		if rec.ID == 3 {
			off = int(rec.Offset) + 30 // in its payload (ids are stored masked)
		}
		return nil
	})
	require.NoError(t, err)
	require.NotZero(t, off, "record 3 not found")
	data[off] ^= 0x20
	require.NoError(t, os.WriteFile(first, data, 0o600))
	want := 1
	code, out, _ = runT(t, "verify", dir)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "damaged at offset")
	require.Contains(t, out, fmt.Sprintf("1 records lost in it, its intact records (up to id %d) kept", r.Segments[0].LastID))
	require.Contains(t, out, fmt.Sprintf("%d records would be lost", want))
	code, out, errOut := runT(t, "repair", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, fmt.Sprintf("repaired: %d records lost", want))
	code, out, _ = runT(t, "verify", dir)
	require.Equal(t, 0, code, out)
	code, out, _ = runT(t, "inspect", dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "quarantined: ")
	require.Contains(t, out, "repaired")
	code, out, _ = runT(t, "dump", dir)
	require.Equal(t, 0, code)
	require.Regexp(t, ` id 3 @\d+ \S+ none 0B gap \(ids lost to damage, already counted\)`, out) // the repair's stand-in for record 3
	require.Contains(t, out, " id 4 ")
	code, out, _ = runT(t, "repair", dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "nothing to repair")
}

// Each kind of damage: verify exits 1 and names the exact loss, repair
// reports the same count, and verify is content afterwards.
func TestVerifyAndRepairCountEachDamageKind(t *testing.T) {
	type damage struct {
		name string
		do   func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 // returns the records lost
	}
	path := func(dir string, s wal.SegmentReport) string { return filepath.Join(dir, s.Name) }
	count := func(s wal.SegmentReport) uint64 { return s.LastID - s.FirstID + 1 }
	kinds := []damage{
		{"first segment deleted", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			require.NoError(t, os.Remove(path(dir, segs[0])))
			return count(segs[0])
		}},
		{"middle segment deleted", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			require.NoError(t, os.Remove(path(dir, segs[1])))
			return count(segs[1])
		}},
		{"last segment deleted", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			s := segs[len(segs)-1]
			require.NoError(t, os.Remove(path(dir, s)))
			return count(s)
		}},
		{"last segment truncated to 0 bytes", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			s := segs[len(segs)-1]
			require.NoError(t, os.Truncate(path(dir, s), 0))
			return count(s)
		}},
		{"last segment zero-filled", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			s := segs[len(segs)-1]
			require.NoError(t, os.WriteFile(path(dir, s), make([]byte, s.FileSize), 0o600))
			return count(s)
		}},
		{"last segment cut at a record boundary", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			s := segs[len(segs)-1]
			var offs []int64
			_, err := wal.ReadSegment(path(dir, s), func(r wal.Record) error {
				offs = append(offs, r.Offset)
				return nil
			})
			require.NoError(t, err)
			require.Greater(t, len(offs), 2)
			require.NoError(t, os.Truncate(path(dir, s), offs[2])) // records 0 and 1 stay
			return count(s) - 2
		}},
		{"garbage ACK", func(t *testing.T, dir string, segs []wal.SegmentReport) uint64 {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "ACK"), []byte("not an ack log at all, garbage"), 0o600))
			return 0 // nothing is lost: everything on disk is replayed
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			dir, _ := makeWALN(t, 150)
			r, err := wal.Inspect(dir)
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(r.Segments), 3)
			lost := k.do(t, dir, r.Segments)
			code, out, _ := runT(t, "verify", dir)
			require.Equal(t, 1, code, out)
			require.Contains(t, out, fmt.Sprintf("%d records would be lost", lost), out)
			code, out, errOut := runT(t, "repair", dir)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, fmt.Sprintf("repaired: %d records lost", lost), out)
			code, out, _ = runT(t, "verify", dir)
			require.Equal(t, 0, code, out)
		})
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
	if code != 2 || !strings.Contains(errOut, "in use") {
		t.Fatalf("repair of a locked dir: %d %s", code, errOut)
	}
}

// TestDumpAndInspectShowKeys: a keyed record's keys in dump (per item, per
// record, and in JSON) and its count in inspect; unkeyed records show none.
func TestDumpAndInspectShowKeys(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096})
	require.NoError(t, err)
	p := wal.AppendFrame(wal.AppendFrame(nil, []byte("a")), []byte("b"))
	_, err = l.WriteKeyed(wal.AppendKeys(p, []uint64{9, 4}))
	require.NoError(t, err)
	_, err = l.Append(wal.AppendFrame(nil, []byte("plain")))
	require.NoError(t, err)
	require.NoError(t, l.Close())

	code, out, errOut := runT(t, "dump", "-items", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, " item 0 (key 9) @")
	require.Contains(t, out, " item 1 (key 4) @")
	require.Regexp(t, `id 2 item 0 @\d+ .*: plain\n`, out)
	code, out, errOut = runT(t, "dump", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "id 1 keys [9 4] @")
	code, out, _ = runT(t, "dump", "-json", "-items", dir)
	require.Equal(t, 0, code)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3)
	var d dumpRecord
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &d))
	require.NotNil(t, d.Key)
	require.Equal(t, uint64(4), *d.Key)
	var plain dumpRecord
	require.NoError(t, json.Unmarshal([]byte(lines[2]), &plain))
	require.Nil(t, plain.Key)
	code, out, errOut = runT(t, "inspect", dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "1 of the records are keyed")
}
