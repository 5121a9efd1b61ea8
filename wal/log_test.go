package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/stretchr/testify/require"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChildMain())
	}
	if os.Getenv(deadChildEnv) != "" {
		os.Exit(deadChildMain())
	}
	if os.Getenv(rangeChildEnv) != "" {
		os.Exit(rangeChildMain())
	}
	goleak.VerifyTestMain(m)
}

func smallOpts() Options {
	return Options{SegmentSize: 64 << 10, AckInterval: 1}
}

func openT(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	require.NoError(t, err)
	return l
}

// replayAll collects every replayed record.
func replayAll(t testing.TB, l *Log) map[uint64][]byte {
	t.Helper()
	got := map[uint64][]byte{}
	var last uint64
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		require.Greater(t, id, last, "replay out of order")
		last = id
		got[id] = bytes.Clone(p)
		return nil
	}))
	return got
}

func payloadFor(i int) []byte {
	return []byte(fmt.Sprintf(`{"event":"click","user":%d,"page":"/products/%d","ua":"Mozilla/5.0 (X11; Linux x86_64)","n":%d}`, i%97, i%13, i))
}

func TestAppendReplayAcrossCompressions(t *testing.T) {
	for _, c := range []Compression{Snappy, LZ4, NoCompression} {
		t.Run(c.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := smallOpts()
			opts.Compression = c
			opts.NoSync = true // durability is the crash test's business
			l := openT(t, dir, opts)
			want := map[uint64][]byte{}
			for i := 0; i < 2000; i++ {
				p := bytes.Repeat(payloadFor(i), 1+i%5)
				id, err := l.Append(p)
				require.NoError(t, err)
				want[id] = p
			}
			// An incompressible payload is stored as is.
			rnd := make([]byte, 3000)
			for i := range rnd {
				rnd[i] = byte(i*7919 + i>>3*31)
			}
			id, err := l.Append(rnd)
			require.NoError(t, err)
			want[id] = rnd
			require.Greater(t, l.Stats().Segments, 1, "expected several segments")
			require.NoError(t, l.Close())

			l = openT(t, dir, opts)
			require.Equal(t, want, replayAll(t, l))
			require.Equal(t, uint64(len(want)), l.Stats().Replayed)
			require.Zero(t, l.Stats().Corrupt)
			// New ids continue after the recovered ones.
			id2, err := l.Append([]byte("next"))
			require.NoError(t, err)
			require.Equal(t, id+1, id2)
			require.NoError(t, l.Close())
		})
	}
}

func TestAckOutOfOrderDeletesSegmentsAndSkipsReplay(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	l := openT(t, dir, opts)
	var ids []uint64
	for i := 0; i < 3000; i++ {
		id, err := l.Append(payloadFor(i))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	segs := l.Stats().Segments
	require.Greater(t, segs, 2)
	// Ack the second half first, then all but id 1500 of the first half.
	for _, id := range ids[1500:] {
		require.NoError(t, l.Ack(id))
	}
	require.Zero(t, l.Stats().AckMark)
	for _, id := range ids[:1500] {
		if id != ids[1000] {
			require.NoError(t, l.Ack(id))
		}
	}
	require.Equal(t, ids[999], l.Stats().AckMark)
	require.NoError(t, l.Checkpoint())
	st := l.Stats()
	require.Equal(t, ids[999], st.Persisted)
	// Per-record acks: every segment but the one holding the unacknowledged
	// record and the active one is deleted, the later ones included.
	require.Equal(t, 2, st.Segments, "segments all acknowledged must be deleted, whatever older records wait")
	require.ErrorContains(t, l.Ack(ids[len(ids)-1]+1), "never issued")
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	got := replayAll(t, l)
	// Only the record not acknowledged comes back (it used to be every
	// record above the low-water mark).
	require.Equal(t, []uint64{ids[1000]}, sortedIDs(got))
	require.Equal(t, 1, l.Stats().Segments)
	require.NoError(t, l.Ack(ids[1000]))
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	require.Empty(t, replayAll(t, l))
	require.Zero(t, l.Stats().Segments)
	require.Zero(t, l.Stats().Corrupt)
	require.NoError(t, l.Close())
}

func TestSpanSet(t *testing.T) {
	var a spanSet
	require.True(t, a.add(3, 3))
	require.True(t, a.add(5, 7))
	require.True(t, a.add(2, 2))
	require.Equal(t, []span{{2, 3}, {5, 7}}, a.spans)
	require.Zero(t, a.mark())
	require.True(t, a.add(1, 1))
	require.Equal(t, uint64(3), a.mark())
	require.True(t, a.add(4, 4))
	require.Equal(t, []span{{1, 7}}, a.spans)
	require.False(t, a.add(2, 6))
	require.True(t, a.add(10, 20))
	require.False(t, a.add(9, 8))
	require.True(t, a.contains(15))
	require.False(t, a.contains(8))
	require.Equal(t, uint64(3), a.count(6, 10))
	require.Equal(t, []span{{8, 9}, {21, 25}}, a.missing(5, 25))
	require.Equal(t, []span{{30, 31}}, a.missing(30, 31))
	require.Empty(t, a.missing(2, 7))
	require.True(t, a.add(8, 9))
	require.Equal(t, uint64(20), a.mark())
	require.Equal(t, uint64(20), a.max())
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	_, err := Open(dir, smallOpts())
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.Close(), ErrClosed)
	_, err = l.Append([]byte("x"))
	require.ErrorIs(t, err, ErrClosed)
	_, err = l.AppendItem([]byte("x"))
	require.ErrorIs(t, err, ErrClosed)
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	l := openT(t, dir, smallOpts())
	_, err := l.Append([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.NotEmpty(t, ents)
	for _, e := range ents {
		info, err := e.Info()
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), e.Name())
	}
}

func TestTooLargeAndInvalidOptions(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.MaxRecord = 1000
	l := openT(t, dir, opts)
	_, err := l.Append(make([]byte, 1001))
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = l.AppendItem(make([]byte, 999))
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = l.Append(make([]byte, 1000))
	require.NoError(t, err)
	require.NoError(t, l.Close())

	for _, o := range []Options{
		{SegmentSize: 100},
		{SegmentSize: 1 << 20, MaxBytes: 1 << 10},
		{SegmentSize: 1 << 20, MaxRecord: 2 << 20},
		{Compression: 9},
	} {
		_, err := Open(t.TempDir(), o)
		require.ErrorIs(t, err, ErrInvalidOptions, "%+v", o)
	}
}

func TestFullByMaxBytesAndENOSPC(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	opts.MaxBytes = 3 * opts.SegmentSize
	l := openT(t, dir, opts)
	var ids []uint64
	var err error
	for i := 0; i < 100000; i++ {
		var id uint64
		id, err = l.Append(bytes.Repeat([]byte{byte(i)}, 700))
		if err != nil {
			break
		}
		ids = append(ids, id)
	}
	require.ErrorIs(t, err, ErrFull)
	require.LessOrEqual(t, l.Stats().Bytes, opts.MaxBytes)
	// Acking frees segments and appends work again.
	for _, id := range ids {
		require.NoError(t, l.Ack(id))
	}
	require.NoError(t, l.Checkpoint())
	_, err = l.Append([]byte("again"))
	require.NoError(t, err)
	require.NoError(t, l.Close())

	// A disk full while preallocating: ErrFull wrapping ENOSPC.
	opts = smallOpts()
	var fail atomic.Bool // the hook also runs on the segment preparer
	fail.Store(true)
	opts.allocate = func(f *os.File, size int64) error {
		if fail.Load() {
			return unix.ENOSPC
		}
		return allocateFile(f, size)
	}
	l = openT(t, t.TempDir(), opts)
	_, err = l.Append([]byte("x"))
	require.ErrorIs(t, err, ErrFull)
	require.ErrorIs(t, err, unix.ENOSPC)
	_, err = l.AppendItem([]byte("x"))
	require.ErrorIs(t, err, ErrFull)
	fail.Store(false)
	_, err = l.Append([]byte("x"))
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

// TestFullOfAcknowledgedFreesItself: a log at MaxBytes whose records are
// all acknowledged takes the next write, though the background ack writer
// (AckInterval: an hour here) has not deleted a segment yet.
func TestFullOfAcknowledgedFreesItself(t *testing.T) {
	opts := smallOpts()
	opts.NoSync = true
	opts.MaxBytes = 3 * opts.SegmentSize
	opts.AckInterval = time.Hour
	l := openT(t, t.TempDir(), opts)
	var ids []uint64
	var err error
	for i := 0; i < 100000; i++ {
		var id uint64
		if id, err = l.Append(bytes.Repeat([]byte{byte(i)}, 700)); err != nil {
			break
		}
		ids = append(ids, id)
	}
	require.ErrorIs(t, err, ErrFull, "the log never filled")
	for _, id := range ids[:len(ids)-1] {
		require.NoError(t, l.Ack(id))
	}
	// One record still pending in the last segment: only what is
	// acknowledged may go.
	n := 0
	for ; n < 100000; n++ {
		if _, err = l.Append(bytes.Repeat([]byte{byte(n)}, 700)); err != nil {
			break
		}
	}
	require.ErrorIs(t, err, ErrFull)
	require.Greater(t, n, 0, "appends refused while acknowledged segments could be freed")
	require.LessOrEqual(t, l.Stats().Bytes, opts.MaxBytes)
	require.NoError(t, l.Close())
}

func TestAppendItemGroupsConcurrentItems(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	const G, N = 16, 300
	var mu sync.Mutex
	byID := map[uint64]int{}
	var wg sync.WaitGroup
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < N; i++ {
				id, err := l.AppendItem([]byte(fmt.Sprintf("g%d-i%d", g, i)))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				byID[id]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	require.Equal(t, uint64(G*N), st.Items)
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	seen := map[string]bool{}
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		n := 0
		err := ForEachItem(p, func(item []byte) error {
			require.False(t, seen[string(item)], "duplicate %s", item)
			seen[string(item)] = true
			n++
			return nil
		})
		require.Equal(t, byID[id], n, "record %d", id)
		return err
	}))
	require.Len(t, seen, G*N)
	require.NoError(t, l.Close())
}

func TestReplayStopsOnCallbackError(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	for i := 0; i < 10; i++ {
		_, err := l.Append(payloadFor(i))
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	boom := errors.New("boom")
	n := 0
	err := l.Replay(func(uint64, []byte, []ItemRange) error {
		n++
		if n == 3 {
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 3, n)
	require.NoError(t, l.Close())
}

func TestNoSyncWriteThenSync(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	l := openT(t, dir, opts)
	for i := 0; i < 100; i++ {
		_, err := l.Write(payloadFor(i))
		require.NoError(t, err)
	}
	require.NoError(t, l.Sync())
	require.Equal(t, uint64(1), l.Stats().Syncs)
	require.NoError(t, l.Close())
	l = openT(t, dir, opts)
	require.Len(t, replayAll(t, l), 100)
	require.NoError(t, l.Close())
}

func TestFrames(t *testing.T) {
	var p []byte
	items := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("b"), 300)}
	for _, it := range items {
		p = AppendFrame(p, it)
	}
	require.Equal(t, FrameSize(0)+FrameSize(1)+FrameSize(300), len(p))
	var got [][]byte
	require.NoError(t, ForEachItem(p, func(it []byte) error { got = append(got, it); return nil }))
	require.Equal(t, items, got)
	require.ErrorIs(t, ForEachItem(p[:len(p)-1], func([]byte) error { return nil }), ErrCorrupt)
	require.ErrorIs(t, ForEachItem([]byte{0xff}, func([]byte) error { return nil }), ErrCorrupt)
}

func TestAppendItemsOneRecord(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	id, err := l.AppendItems([][]byte{[]byte("a"), []byte("bb"), {}})
	require.NoError(t, err)
	id2, err := l.AppendItems(nil)
	require.NoError(t, err)
	require.Zero(t, id2)
	_, err = l.AppendItems([][]byte{make([]byte, 40<<10), make([]byte, 40<<10)})
	require.ErrorIs(t, err, ErrTooLarge)
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	got := replayAll(t, l)
	var items []string
	require.NoError(t, ForEachItem(got[id], func(it []byte) error { items = append(items, string(it)); return nil }))
	require.Equal(t, []string{"a", "bb", ""}, items)
	require.NoError(t, l.Close())
}

// Appends, acks (deleting segments) and a replay all at once, then Close
// racing the appenders: every append either succeeds durably or reports
// ErrClosed, and nothing leaks (goleak in TestMain).
func TestConcurrentAppendAckReplayClose(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	l := openT(t, dir, opts)
	for i := 0; i < 2000; i++ {
		_, err := l.Append(payloadFor(i))
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	var wg sync.WaitGroup
	var mu sync.Mutex
	durable := map[uint64]bool{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var id uint64
				var err error
				if i%2 == 0 {
					id, err = l.AppendItem(payloadFor(i))
				} else {
					id, err = l.Append(payloadFor(i))
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				durable[id] = true
				mu.Unlock()
			}
		}()
	}
	replayed := 0
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		replayed++
		return l.Ack(id)
	}))
	require.Equal(t, 2000, replayed)
	require.NoError(t, l.Checkpoint())
	require.NoError(t, l.Close())
	wg.Wait()

	l = openT(t, dir, smallOpts())
	got := replayAll(t, l)
	for id := range durable {
		require.Contains(t, got, id)
	}
	for id := range got {
		require.True(t, id > 2000, "acknowledged record %d replayed", id)
	}
	require.NoError(t, l.Close())
}

func TestAckRangeAcksTheRecordWithItsLastItem(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	id, err := l.AppendItems([][]byte{[]byte("a"), []byte("b"), []byte("c")})
	require.NoError(t, err)
	id2, err := l.AppendItem([]byte("d"))
	require.NoError(t, err)
	require.ErrorContains(t, l.AckRange(id, 1, 3), "holds 3 items")
	require.ErrorContains(t, l.AckRange(id, -1, 1), "not a range")
	require.ErrorContains(t, l.AckRange(id, 0, 0), "not a range")
	require.NoError(t, l.AckRange(id2, 0, 1))
	require.NoError(t, l.AckRange(id, 2, 1))
	require.NoError(t, l.AckRange(id, 0, 1))
	require.NoError(t, l.AckRange(id, 2, 1), "a repeated range is no error")
	require.Zero(t, l.Stats().AckMark)
	require.Equal(t, uint64(1), l.Stats().ItemsPending)
	require.NoError(t, l.AckRange(id, 0, 2), "overlapping the done items")
	require.Equal(t, id2, l.Stats().AckMark)
	require.Zero(t, l.Stats().ItemsPending)
	require.NoError(t, l.AckRange(id, 1, 1), "the record is acknowledged already")
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	require.Empty(t, replayAll(t, l))
	require.NoError(t, l.Close())
}

func TestSpareSegmentIsPreparedAndCleanedUp(t *testing.T) {
	dir := t.TempDir()
	spare := filepath.Join(dir, spareFileName)
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(spare, []byte("left by a crash"), 0o600))
	opts := smallOpts()
	opts.NoSync = true
	l := openT(t, dir, opts)
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		ready := l.spare != nil
		l.mu.Unlock()
		if ready {
			break
		}
		require.True(t, time.Now().Before(deadline), "no spare segment prepared")
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	st, err := os.Stat(spare)
	require.NoError(t, err)
	require.Equal(t, opts.SegmentSize, st.Size())
	l.mu.Lock()
	require.Equal(t, opts.SegmentSize, l.bytes) // reserved and counted against MaxBytes
	l.mu.Unlock()
	require.Zero(t, l.Stats().Bytes) // but not live: nothing is written
	for i := 0; l.Stats().Segments < 3; i++ {
		_, err := l.Append(bytes.Repeat(payloadFor(i), 20))
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	_, err = os.Stat(spare)
	require.ErrorIs(t, err, os.ErrNotExist)
	l = openT(t, dir, opts)
	require.Equal(t, 3, l.Stats().Segments)
	require.NoError(t, l.Close())
}

// After a failed fdatasync the kernel may have dropped the dirty pages:
// the log must not pretend a later sync covers them. Every later append
// fails with the same error; Close still works.
func TestFailedSyncBreaksTheLog(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	var fail atomic.Bool
	opts.syncFile = func(f *os.File) error {
		if fail.Load() {
			return unix.EIO
		}
		return fdatasync(f)
	}
	l := openT(t, dir, opts)
	id, err := l.Append([]byte("durable"))
	require.NoError(t, err)
	fail.Store(true)
	_, err = l.Append([]byte("lost"))
	require.ErrorIs(t, err, unix.EIO)
	fail.Store(false)
	_, err = l.Append([]byte("refused"))
	require.ErrorIs(t, err, unix.EIO)
	_, err = l.AppendItem([]byte("refused"))
	require.ErrorIs(t, err, unix.EIO)
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	got := replayAll(t, l)
	require.Equal(t, []byte("durable"), got[id])
	require.NoError(t, l.Close())
}

func TestAckLogParse(t *testing.T) {
	b := make([]byte, ackHeaderSize)
	putAckHeader(b, 7)
	b = appendAckEntry(b, ackKindAcked, 1, 100)
	b = appendAckEntry(b, ackKindAcked, 120, 130)
	b = appendAckEntry(b, ackKindWritten, 0, 140)
	st, err := parseAckLog(b)
	require.NoError(t, err)
	require.Equal(t, []span{{1, 100}, {120, 130}}, st.acked.spans)
	require.Equal(t, uint64(140), st.written)
	require.Equal(t, uint64(7), st.gen)
	require.False(t, st.damaged())

	// A torn last write: a partial entry, or a last entry that does not
	// verify, is harmless (it never had a flush after it).
	st, err = parseAckLog(b[:len(b)-5])
	require.NoError(t, err)
	require.Equal(t, 19, st.tornBytes)
	require.Zero(t, st.written)
	require.False(t, st.damaged())
	torn := bytes.Clone(b)
	torn[len(torn)-3] ^= 1
	st, err = parseAckLog(torn)
	require.NoError(t, err)
	require.Equal(t, 1, st.badTail)
	require.False(t, st.damaged())

	// A bad entry with a good one after it is damage.
	mid := bytes.Clone(b)
	mid[ackHeaderSize+ackEntrySize+2] ^= 1
	st, err = parseAckLog(mid)
	require.NoError(t, err)
	require.True(t, st.damaged())
	require.Equal(t, []span{{1, 100}}, st.acked.spans)
	require.Equal(t, uint64(140), st.written)

	bad := bytes.Clone(b)
	bad[3] ^= 1
	_, err = parseAckLog(bad)
	require.ErrorIs(t, err, errAckHeader)
	_, err = parseAckLog(b[:10])
	require.ErrorIs(t, err, errAckHeader)

	// The two-slot file of earlier versions reads as its mark.
	legacy := make([]byte, 2*legacyAckSlotSize)
	putLegacySlot(legacy[0:], 4, 100)
	putLegacySlot(legacy[legacyAckSlotSize:], 5, 120)
	st, err = parseAckLog(legacy)
	require.NoError(t, err)
	require.True(t, st.legacy)
	require.Equal(t, []span{{1, 120}}, st.acked.spans)
}

// putLegacySlot writes a slot of the two-slot ack file earlier versions kept.
func putLegacySlot(b []byte, seq, mark uint64) {
	binary.BigEndian.PutUint32(b[0:4], legacyAckMagic)
	binary.LittleEndian.PutUint64(b[4:12], seq)
	binary.LittleEndian.PutUint64(b[12:20], mark)
	binary.LittleEndian.PutUint32(b[20:24], crc32.Checksum(b[0:20], castagnoli))
}

// An unreadable ACK file means replaying everything on disk, never losing,
// and never counting ids missing from disk as lost (they may have been
// acknowledged): they are reported as unknown instead.
func TestGarbageAckReplaysEverything(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	for i := 0; i < 5; i++ {
		id, err := l.Append(payloadFor(i))
		require.NoError(t, err)
		if i < 3 {
			require.NoError(t, l.Ack(id))
		}
	}
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	require.Len(t, replayAll(t, l), 2)
	require.NoError(t, l.Close())
	require.NoError(t, os.WriteFile(filepath.Join(dir, ackFileName), []byte("garbage"), 0o600))
	r, err := Inspect(dir)
	require.NoError(t, err)
	require.True(t, r.Damaged())
	require.NotEmpty(t, r.AckProblem)
	l = openT(t, dir, smallOpts())
	require.Len(t, replayAll(t, l), 5)
	require.Zero(t, l.Stats().Corrupt)
	require.NoError(t, l.Close())
	_, err = os.Stat(filepath.Join(dir, ackFileName+corruptSuffix))
	require.NoError(t, err, "the garbage is kept aside")
}

// The expansion bounds decompress enforces hold for the most compressible
// input there is.
func TestDecompressBoundsAdmitExtremeRatios(t *testing.T) {
	for _, c := range []Compression{Snappy, LZ4} {
		for _, n := range []int{100, 4096, 1 << 20, 4 << 20} {
			p := make([]byte, n)
			z := &compressor{c: c}
			stored, codec := z.compress(p)
			require.True(t, codec != codecNone, "%s did not compress %d zeros", c, n)
			raw, _, err := decompress(nil, codec, stored, 16<<20)
			require.NoError(t, err, "%s, %d zeros (ratio %.0f)", c, n, float64(n)/float64(len(stored)))
			require.Equal(t, n, len(raw))
		}
	}
}

func TestReadRange(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	l := openT(t, dir, opts)
	want := map[uint64][]byte{}
	appendN := func(n int) {
		for i := 0; i < n; i++ {
			p := payloadFor(len(want))
			id, err := l.Append(p)
			require.NoError(t, err)
			want[id] = p
		}
	}
	appendN(1500) // several segments
	require.NoError(t, l.Close())
	l = openT(t, dir, opts) // recovered segments, then new ones
	appendN(1500)
	check := func(from, to uint64) {
		t.Helper()
		next := from
		require.NoError(t, l.ReadRange(from, to, func(id uint64, p []byte) error {
			require.Equal(t, next, id, "range [%d, %d]", from, to)
			require.True(t, bytes.Equal(want[id], p), "payload of %d", id)
			next++
			return nil
		}))
		require.Equal(t, min(to, 3000)+1, next, "range [%d, %d] ended early", from, to)
	}
	for _, r := range [][2]uint64{{1, 1}, {1, 3000}, {63, 65}, {64, 64}, {700, 2300}, {1499, 1502}, {2999, 3000}, {2990, 5000}} {
		check(r[0], r[1])
	}
	// Concurrent appends do not disturb a read of what was written before.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 500; i++ {
			if _, err := l.Append(payloadFor(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	check(1000, 3000)
	<-done
	// Acknowledged and deleted segments are skipped.
	for id := uint64(1); id <= 2000; id++ {
		require.NoError(t, l.Ack(id))
	}
	require.NoError(t, l.Checkpoint())
	n := 0
	require.NoError(t, l.ReadRange(1, 3000, func(id uint64, p []byte) error { n++; return nil }))
	require.True(t, n >= 1000 && n < 3000, "read %d records", n)
	boom := errors.New("boom")
	require.ErrorIs(t, l.ReadRange(2500, 2600, func(uint64, []byte) error { return boom }), boom)
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.ReadRange(1, 2, func(uint64, []byte) error { return nil }), ErrClosed)
}

// StartSync returns before the fdatasync and ends with one that covers
// every record written before it; writes may go on meanwhile. A failed
// fdatasync ends it with the error, and a closed Log with ErrClosed.
func TestStartSync(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	var fail atomic.Bool
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	opts.syncFile = func(f *os.File) error {
		select {
		case entered <- struct{}{}:
			<-release // the first fdatasync waits
		default:
		}
		if fail.Load() {
			return unix.EIO
		}
		return fdatasync(f)
	}
	l := openT(t, dir, opts)
	last, err := l.Write([]byte("before"))
	require.NoError(t, err)
	p := l.StartSync()
	<-entered // the round is in its fdatasync, and StartSync has returned
	_, err = l.Write([]byte("meanwhile"))
	require.NoError(t, err)
	select {
	case <-p.Done():
		t.Fatal("StartSync's sync ended before its fdatasync returned")
	default:
	}
	close(release)
	<-p.Done()
	require.NoError(t, p.Err())
	require.GreaterOrEqual(t, l.synced.Load(), last)

	fail.Store(true)
	_, err = l.Write([]byte("lost"))
	require.NoError(t, err)
	require.ErrorIs(t, l.StartSync().Err(), unix.EIO)
	fail.Store(false)
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.StartSync().Err(), ErrClosed)
}
