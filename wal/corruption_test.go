package wal

import (
	"bytes"
	"fmt"
	"github.com/stretchr/testify/require"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// corruptionFixture is a small WAL directory: segment A with a handful of
// records (snappy, lz4-free, some stored raw) followed by segment B, which
// a large record forced into existence. The tests damage A and check what
// recovery makes of it.
type corruptionFixture struct {
	opts     Options
	files    map[string][]byte // name -> contents, ACK included
	a, b     string            // segment names
	recs     []fixtureRecord   // A's records in order
	payloads map[uint64][]byte // every record's payload, A's and B's
	bIDs     []uint64
}

type fixtureRecord struct {
	id                  uint64
	start, crcEnd, next int64 // the record spans [start, next); CRC covers [start, crcEnd)
}

func buildCorruptionFixture(t *testing.T) *corruptionFixture {
	t.Helper()
	// Thousands of Opens: what is being tested is what recovery decides,
	// not the disk's flush latency.
	skipFsync = true
	t.Cleanup(func() { skipFsync = false })
	dir := t.TempDir()
	f := &corruptionFixture{opts: Options{SegmentSize: 4096, NoSync: true}, files: map[string][]byte{}, payloads: map[uint64][]byte{}}
	l := openT(t, dir, f.opts)
	add := func(p []byte) {
		id, err := l.Append(p)
		require.NoError(t, err)
		f.payloads[id] = p
	}
	for i := 0; i < 6; i++ {
		add(bytes.Repeat(payloadFor(i), i%3+1)) // compressible: snappy
	}
	add([]byte("tiny"))
	noise := make([]byte, 3500)
	x := uint32(1)
	for i := range noise {
		x = x*1664525 + 1013904223
		noise[i] = byte(x >> 24)
	}
	add(noise) // does not fit in A: B starts here
	add(payloadFor(100))
	add([]byte("last"))
	require.NoError(t, l.Close())

	segs, err := listSegments(dir)
	require.NoError(t, err)
	require.Len(t, segs, 2)
	f.a, f.b = segs[0].name, segs[1].name
	for _, name := range []string{f.a, f.b, ackFileName} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		f.files[name] = b
	}
	data := f.files[f.a]
	for pos := int64(segmentHeaderSize); ; {
		h, stored, size, err := decodeRecord(data[pos:], 1<<20, 0, fileFraming(t, data))
		if err != nil {
			break
		}
		f.recs = append(f.recs, fixtureRecord{h.id, pos, pos + recordHeaderSize + int64(len(stored)) + recordTrailerSize, pos + size})
		pos += size
	}
	require.Equal(t, 7, len(f.recs))
	for id := f.recs[len(f.recs)-1].id + 1; f.payloads[id] != nil; id++ {
		f.bIDs = append(f.bIDs, id)
	}
	require.Len(t, f.bIDs, 3)
	return f
}

// recoverWith writes the fixture into dir with segment A replaced by a (B
// left out if !withB), opens it twice and returns what the first Open
// replayed and counted. The second Open must find nothing new to count
// and replay the same records: a repair is done once.
func (f *corruptionFixture) recoverWith(t *testing.T, what, dir string, a []byte, withB bool) (map[uint64][]byte, Stats) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	for name, b := range f.files {
		if name == f.b && !withB {
			continue
		}
		if name == f.a {
			b = a
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o600))
	}
	var first map[uint64][]byte
	var st Stats
	for round := 0; round < 2; round++ {
		l, err := Open(dir, f.opts)
		require.NoError(t, err, "%s: round %d", what, round)
		got := map[uint64][]byte{}
		require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
			got[id] = bytes.Clone(p)
			return nil
		}), "%s: round %d", what, round)
		s := l.Stats()
		require.NoError(t, l.Close())
		if round == 0 {
			first, st = got, s
			continue
		}
		require.Zero(t, s.Corrupt, "second Open counted damage again")
		require.Equal(t, sortedIDs(first), sortedIDs(got), "second Open replayed something else")
	}
	return first, st
}

// lostFrom returns the indexes of A's records from k on: what a cut at
// record k loses.
func (f *corruptionFixture) lostFrom(k int) []int {
	var out []int
	for i := k; i < len(f.recs); i++ {
		out = append(out, i)
	}
	return out
}

// check asserts that exactly A's records but those at the indexes lostA,
// and all of B, came back, and that the ones lost were counted as corrupt.
// quarantined says whether recovery must have copied A aside: not when what
// is left of a torn record reads as an unwritten slot (see the truncation
// test).
func (f *corruptionFixture) check(t *testing.T, what string, got map[uint64][]byte, st Stats, lostA []int, withB, quarantined bool) {
	t.Helper()
	want := map[uint64][]byte{}
	for i, r := range f.recs {
		if !slices.Contains(lostA, i) {
			want[r.id] = f.payloads[r.id]
		}
	}
	if withB {
		for _, id := range f.bIDs {
			want[id] = f.payloads[id]
		}
	}
	require.Equal(t, sortedIDs(want), sortedIDs(got), what)
	for id, p := range want {
		require.True(t, bytes.Equal(p, got[id]), "%s: payload of record %d differs", what, id)
	}
	// Exact in every case: without B, the ack log's written mark says B's
	// records existed, and they are gone too.
	lost := uint64(len(lostA))
	if !withB {
		lost += uint64(len(f.bIDs))
	}
	require.Equal(t, lost, st.Corrupt, what)
	if quarantined && len(lostA) > 0 && !strings.HasPrefix(what, "truncate at 0 ") {
		require.Equal(t, uint64(1), st.Quarantined, what)
	}
}

// recordAt returns the index of the record whose checksummed bytes hold
// offset off, or -1.
func (f *corruptionFixture) recordAt(off int64) int {
	for i, r := range f.recs {
		if off >= r.start && off < r.crcEnd {
			return i
		}
	}
	return -1
}

// offsets returns the offsets to damage: every byte of the used part and of
// the next 64 bytes, and a sample of the zero tail (every byte with
// VINEWAL_FULL_CORRUPTION=1). -short strides through the used part too.
func (f *corruptionFixture) offsets() []int64 {
	used := f.recs[len(f.recs)-1].next
	size := int64(len(f.files[f.a]))
	stride, tailStride := int64(1), int64(61)
	if testing.Short() {
		stride = 7
	}
	if os.Getenv("VINEWAL_FULL_CORRUPTION") != "" {
		stride, tailStride = 1, 1
	}
	var offs []int64
	for o := int64(0); o < size; {
		offs = append(offs, o)
		if o < used+64 {
			o += stride
		} else {
			o += tailStride
		}
	}
	return append(offs, size-1)
}

func TestCorruptionBitFlipAtEveryOffset(t *testing.T) {
	f := buildCorruptionFixture(t)
	root := fastTempDir(t)
	for _, withB := range []bool{true, false} {
		for _, off := range f.offsets() {
			a := bytes.Clone(f.files[f.a])
			a[off] ^= 1 << (off % 8)
			what := fmt.Sprintf("flip bit %d at offset %d (segment B present: %v)", off%8, off, withB)
			// A flip in a record loses that record alone: the scan finds
			// the next one and goes on. A flip in the header loses them all.
			var lostA []int
			switch k := f.recordAt(off); {
			case off < segmentHeaderSize:
				lostA = f.lostFrom(0)
			case k >= 0:
				lostA = []int{k}
				if r := f.recs[k]; off < r.start+8 && allZero(a[r.start:r.start+8]) {
					lostA = nil // id zeroed: the checksum still proves the record
				}
			}
			dir := filepath.Join(root, fmt.Sprint(withB, off))
			got, st := f.recoverWith(t, what, dir, a, withB)
			f.check(t, what, got, st, lostA, withB, true)
			require.NoError(t, os.RemoveAll(dir))
		}
	}
}

func TestCorruptionTruncationAtEveryOffset(t *testing.T) {
	f := buildCorruptionFixture(t)
	root := fastTempDir(t)
	for _, withB := range []bool{true, false} {
		for _, off := range f.offsets() {
			what := fmt.Sprintf("truncate at %d (segment B present: %v)", off, withB)
			keptA := 0
			if off >= segmentHeaderSize {
				for _, r := range f.recs {
					if r.crcEnd <= off {
						keptA++
					}
				}
			}
			dir := filepath.Join(root, fmt.Sprint(withB, off))
			got, st := f.recoverWith(t, what, dir, f.files[f.a][:off], withB)
			// A torn record whose written bytes are all zero (a cut inside
			// its id word, which is masked by the segment's random salt and
			// so has zero bytes by chance) reads as an unwritten slot: the
			// segment ends there. Its loss is still counted (B's ids, or
			// the ack log's written mark, say the records existed), but
			// nothing marks the segment damaged, so it is not copied aside.
			quarantined := true
			if keptA < len(f.recs) {
				if r := f.recs[keptA]; off > r.start && !slices.ContainsFunc(f.files[f.a][r.start:off], func(b byte) bool { return b != 0 }) {
					quarantined = false
				}
			}
			f.check(t, what, got, st, f.lostFrom(keptA), withB, quarantined)
			require.NoError(t, os.RemoveAll(dir))
		}
	}
}

// A damaged segment is moved aside, never deleted.
func TestCorruptSegmentIsQuarantined(t *testing.T) {
	f := buildCorruptionFixture(t)
	dir := t.TempDir()
	a := bytes.Clone(f.files[f.a])
	a[f.recs[3].start+30] ^= 0x40
	got, st := f.recoverWith(t, "flip in record 3", dir, a, true)
	f.check(t, "flip in record 3", got, st, []int{3}, true, true)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var corrupt []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), corruptSuffix) {
			corrupt = append(corrupt, e.Name())
		}
	}
	require.Equal(t, []string{f.a + corruptSuffix}, corrupt)
	moved, err := os.ReadFile(filepath.Join(dir, f.a+corruptSuffix))
	require.NoError(t, err)
	require.Equal(t, a, moved)
}

func sortedIDs(m map[uint64][]byte) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// fastTempDir returns a temporary directory on /dev/shm when there is one:
// the corruption tests create thousands of files, and file creation on a
// busy disk's journal costs far more than the recovery being tested.
func fastTempDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "vinewal-test-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// A valid record far beyond the end of the log, past an unwritten (hole)
// stretch of a preallocated segment, is still found by the look-ahead that
// skips holes with SEEK_DATA: it proves the zero id before it is damage,
// and the scan goes on from it (the ids in between are lost).
func TestLookAheadAcrossHoles(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	l := openT(t, dir, opts)
	for i := 0; i < 3; i++ {
		_, err := l.Append(payloadFor(i))
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	path := filepath.Join(dir, segmentName(1))
	p := []byte("a record written where the log never reached")
	rec := make([]byte, recordSize(len(p)))
	seg, err := os.ReadFile(path)
	require.NoError(t, err)
	encodeRecord(rec, recordHeader{id: 10, time: 1}, p, fileFraming(t, seg)) // as the log would have
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(rec, 600000)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	l = openT(t, dir, opts)
	got := replayAll(t, l)
	require.Equal(t, []uint64{1, 2, 3, 10}, sortedIDs(got)) // the scan goes on at the intact record
	st := l.Stats()
	require.Equal(t, uint64(6), st.Corrupt) // ids 4..9
	require.Equal(t, uint64(1), st.Quarantined)
	require.NoError(t, l.Close())
}

// fileFraming returns the framing of the records of the segment file b.
func fileFraming(t testing.TB, b []byte) recordFraming {
	t.Helper()
	h, err := parseSegmentHeader(b)
	require.NoError(t, err)
	return h.framing()
}
