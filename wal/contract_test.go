package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Open never fails on what it can move aside: a directory where LOCK, ACK,
// a segment or the spare segment should be.
func TestOpenQuarantinesDirectoriesWhereFilesBelong(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{lockFileName, ackFileName, segmentName(1), spareFileName} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, name, "inside"), 0o700))
	}
	l := openT(t, dir, smallOpts())
	id, err := l.Append([]byte("after the damage"))
	require.NoError(t, err)
	require.Equal(t, uint64(1), id)
	require.Zero(t, l.Stats().Corrupt)
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	require.Equal(t, []byte("after the damage"), replayAll(t, l)[1])
	require.NoError(t, l.Close())
	for _, name := range []string{lockFileName, ackFileName, segmentName(1), spareFileName} {
		fi, err := os.Stat(filepath.Join(dir, name+corruptSuffix))
		require.NoError(t, err, name)
		require.True(t, fi.IsDir(), name)
	}
}

// A full disk anywhere in Open is ErrFull, still wrapping the cause.
func TestOpenOnAFullDiskIsErrFull(t *testing.T) {
	opts := smallOpts()
	opts.fault = func(step string) error {
		if step == "ack" {
			return unix.ENOSPC
		}
		return nil
	}
	_, err := Open(t.TempDir(), opts)
	require.ErrorIs(t, err, ErrFull)
	require.ErrorIs(t, err, unix.ENOSPC)
}

// A second Open of a directory in use, in the same process, is ErrLocked,
// and the message says so once.
func TestLockedMessageOnce(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	defer l.Close()
	_, err := Open(dir, smallOpts())
	require.ErrorIs(t, err, ErrLocked)
	require.Equal(t, "wal: directory in use: "+dir, err.Error())
	require.Equal(t, 1, strings.Count(err.Error(), "in use"))
}

// A group never grows past a record: items under the limit from many
// goroutines are all accepted, however large the group would have grown,
// and one item over the limit fails alone.
func TestAppendItemsTooLargeFailsOnlyItsCaller(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4 << 20, MaxRecord: 256 << 10, NoSync: false}
	l := openT(t, dir, opts)
	require.Equal(t, 256<<10, l.MaxRecord())
	const G, N = 64, 20
	item := bytes.Repeat([]byte{'x'}, 16<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	var tooLarge []error
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < N; i++ {
				_, err := l.AppendItems([][]byte{item})
				mu.Lock()
				if err == nil {
					accepted++
				} else {
					t.Error(err)
				}
				mu.Unlock()
			}
		}()
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.AppendItems([][]byte{make([]byte, 256<<10)}) // its frame header tips it over
			mu.Lock()
			tooLarge = append(tooLarge, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Equal(t, G*N, accepted)
	for _, err := range tooLarge {
		require.ErrorIs(t, err, ErrTooLarge)
	}
	require.NoError(t, l.Close())
	l = openT(t, dir, opts)
	items := 0
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		require.LessOrEqual(t, len(p), 256<<10, "record %d over the limit", id)
		return ForEachItem(p, func([]byte) error { items++; return nil })
	}))
	require.Equal(t, G*N, items)
	require.NoError(t, l.Close())
}

// Stats.Bytes counts what is live: not the preallocated segments, and
// not acknowledged records.
func TestStatsBytesIsLive(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.NoSync = true
	// No durable ack flush but the test's own (Checkpoint): a background
	// one would delete the all-acknowledged segment between Ack and Stats.
	opts.AckInterval = time.Hour
	l := openT(t, dir, opts)
	require.Zero(t, l.Stats().Bytes, "a new empty log")
	p := []byte("0123456789")
	a, err := l.Append(p)
	require.NoError(t, err)
	b, err := l.Append(p)
	require.NoError(t, err)
	rec := recordSize(len(p))
	require.Equal(t, segmentHeaderSize+2*rec, l.Stats().Bytes)
	require.NoError(t, l.Ack(a))
	require.Equal(t, segmentHeaderSize+rec, l.Stats().Bytes)
	require.NoError(t, l.Close())
	l = openT(t, dir, opts)
	require.Equal(t, segmentHeaderSize+rec, l.Stats().Bytes)
	require.NoError(t, l.Ack(b))
	require.Equal(t, int64(segmentHeaderSize), l.Stats().Bytes)
	require.NoError(t, l.Checkpoint())
	require.Zero(t, l.Stats().Bytes, "the segment all acknowledged is gone")
	require.NoError(t, l.Close())
}

// A record's item count is stated in its header, so AckRange works on a
// recovered record before Replay, as on one appended in this process; and
// Write counts frames the same way.
func TestAckRangeOnRecoveredAndWrittenRecords(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	var p []byte
	for _, s := range []string{"a", "b", "c"} {
		p = AppendFrame(p, []byte(s))
	}
	id, err := l.Write(p)
	require.NoError(t, err)
	require.NoError(t, l.Sync())
	require.ErrorContains(t, l.AckRange(id, 0, 4), "holds 3 items")
	id2, err := l.Write(p)
	require.NoError(t, err)
	require.NoError(t, l.AckRange(id2, 0, 3))
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	st := l.Stats()
	require.Equal(t, uint64(3), st.ItemsPending, "known at Open")
	require.Zero(t, st.Uncounted)
	require.ErrorContains(t, l.AckRange(id, 2, 2), "holds 3 items")
	require.NoError(t, l.AckRange(id, 1, 1))
	require.Equal(t, uint64(2), l.Stats().ItemsPending)
	var done []ItemRange
	require.NoError(t, l.Replay(func(rid uint64, _ []byte, d []ItemRange) error {
		require.Equal(t, id, rid)
		done = d
		return nil
	}))
	require.Equal(t, []ItemRange{{Off: 1, N: 1}}, done)
	require.NoError(t, l.AckRange(id, 0, 1))
	require.Equal(t, uint64(0), l.Stats().AckMark)
	require.NoError(t, l.AckRange(id, 2, 1))
	require.Equal(t, id2, l.Stats().AckMark)
	require.NoError(t, l.Close())
	l = openT(t, dir, smallOpts())
	require.Empty(t, replayAll(t, l))
	require.NoError(t, l.Close())
}

// Segments of format version 1 (no item counts in record headers) are
// read: their records' counts are unknown until Replay counts the frames
// (Stats.Uncounted), AckRange is kept for them meanwhile, and a record
// whose ranges turn out to cover it is acknowledged at Replay.
func TestVersion1SegmentCountsAtReplay(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	ids := make([]uint64, 3)
	for i := range ids {
		var err error
		ids[i], err = l.AppendItems([][]byte{[]byte("a"), []byte("b")})
		require.NoError(t, err)
		// One record each: wait for each append (AppendItems does).
	}
	require.NoError(t, l.Close())
	rewriteAsVersion1(t, dir)

	l = openT(t, dir, smallOpts())
	st := l.Stats()
	require.Zero(t, st.ItemsPending)
	require.Equal(t, 3, st.Uncounted)
	require.False(t, st.OldestPending.IsZero())
	require.NoError(t, l.AckRange(ids[0], 0, 2)) // covers it, not known yet
	require.NoError(t, l.AckRange(ids[1], 1, 5)) // past its count: clipped at Replay
	got := map[uint64][]ItemRange{}
	require.NoError(t, l.Replay(func(id uint64, _ []byte, d []ItemRange) error {
		got[id] = d
		return nil
	}))
	require.Equal(t, map[uint64][]ItemRange{ids[1]: {{Off: 1, N: 1}}, ids[2]: nil}, got)
	st = l.Stats()
	require.Zero(t, st.Uncounted)
	require.Equal(t, uint64(3), st.ItemsPending)
	require.NoError(t, l.Close())
}

// rewriteAsVersion1 turns every segment of dir into format version 1: the
// header's version, and records' item counts zeroed (checksums redone).
func rewriteAsVersion1(t *testing.T, dir string) {
	t.Helper()
	files, err := listSegments(dir)
	require.NoError(t, err)
	for _, sf := range files {
		path := filepath.Join(dir, sf.name)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		was := fileFraming(t, b)
		binary.LittleEndian.PutUint16(b[4:6], segmentVersionNoCounts)
		clear(b[24:28]) // the salt: version 1 has none
		binary.LittleEndian.PutUint32(b[28:32], crc32.Checksum(b[0:28], castagnoli))
		for pos := int64(segmentHeaderSize); ; {
			h, _, size, err := decodeRecord(b[pos:], 1<<20, 0, was)
			if err != nil {
				break
			}
			clear(b[pos+22 : pos+24])
			reframe(b[pos:], h.id, h.length, recordFraming{})
			pos += size
		}
		require.NoError(t, os.WriteFile(path, b, 0o600))
	}
}

// Append, Sync and AppendItems all wait in the one group commit: many
// concurrent waits cost far fewer fdatasyncs than calls.
func TestDurabilityWaitsShareTheGroupCommit(t *testing.T) {
	l := openT(t, t.TempDir(), smallOpts())
	const G, N = 32, 20
	var wg sync.WaitGroup
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < N; i++ {
				var err error
				switch (g + i) % 3 {
				case 0:
					_, err = l.Append(payloadFor(i))
				case 1:
					_, err = l.AppendItem(payloadFor(i))
				default:
					if _, err = l.Write(payloadFor(i)); err == nil {
						err = l.Sync()
					}
				}
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	require.LessOrEqual(t, st.Appended, uint64(G*N))
	require.Less(t, st.Syncs, uint64(G*N))
	require.NoError(t, l.Close())
}

// WriteAcks puts the acknowledgements made so far in the ack log before it
// returns (no waiting for the background writer), so a process killed right
// after does not replay them.
func TestWriteAcksWritesNow(t *testing.T) {
	dir := t.TempDir()
	opts := smallOpts()
	opts.AckInterval = time.Hour // no durable flush in this test
	l := openT(t, dir, opts)
	defer l.Close()
	id, err := l.AppendItems([][]byte{[]byte("a"), []byte("b"), []byte("c")})
	require.NoError(t, err)
	before, err := os.Stat(filepath.Join(dir, ackFileName))
	require.NoError(t, err)
	require.NoError(t, l.AckRange(id, 0, 2))
	require.NoError(t, l.WriteAcks())
	after, err := os.Stat(filepath.Join(dir, ackFileName))
	require.NoError(t, err)
	require.Greater(t, after.Size(), before.Size(), "the item entry is in the ack log when WriteAcks returns")
	data, err := os.ReadFile(filepath.Join(dir, ackFileName))
	require.NoError(t, err)
	st, err := parseAckLog(data)
	require.NoError(t, err)
	require.NotNil(t, st.items.of(id), "the ack log holds the item range")
}
