package vinequeue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// forgedRecord returns the bytes of a WAL data record (the wal package's
// on-disk layout, rebuilt here from its documentation as an attacker
// would) with the given id, holding items framed as the queue frames them,
// with a valid checksum, padded to 8 bytes.
func forgedRecord(id uint64, ts int64, items [][]byte) []byte {
	var payload []byte
	for _, it := range items {
		payload = binary.AppendUvarint(payload, uint64(len(it)))
		payload = append(payload, it...)
	}
	n := len(payload)
	b := make([]byte, (24+n+4+7)&^7)
	binary.LittleEndian.PutUint64(b[0:8], id)
	binary.LittleEndian.PutUint64(b[8:16], uint64(ts))
	binary.LittleEndian.PutUint32(b[16:20], uint32(n))
	b[20] = 0 // codec none
	b[21] = 0 // kind data
	binary.LittleEndian.PutUint16(b[22:24], uint16(len(items)))
	copy(b[24:], payload)
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Checksum(b[0:8], tab), tab, b[8:24+n])
	binary.LittleEndian.PutUint32(b[24+n:], crc)
	return b
}

// forgingItem is an item an untrusted producer can send (an HTTP body, say)
// that holds, at each of the 8 alignments, a forged WAL record carrying
// forged: whatever the item's offset in its record, one copy lands on an
// 8-byte boundary. Random bytes around them keep the payload from
// compressing, so the default Snappy stores it as it is.
func forgingItem(rng *rand.Rand, id uint64, forged [][]byte) []byte {
	var item []byte
	junk := func(n int) {
		for range n {
			item = append(item, byte(rng.Uint32()))
		}
	}
	junk(4096)
	for k := range 8 {
		rec := forgedRecord(id, rng.Int64(), append([][]byte{[]byte(strings.Repeat("#", k))}, forged...))
		item = append(item, rec...)
		junk(1 + 8*(64+rng.IntN(64))) // shifts the next copy by one byte mod 8
	}
	junk(64)
	return item
}

// segmentFiles returns dir's segment files.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no segment in %s (%v)", dir, err)
	}
	return segs
}

// forgeCase is one way the record holding a forging item is damaged.
type forgeCase struct {
	name   string
	id     uint64 // the forged records' id
	damage func(seg []byte)
}

// flipTimestamp flips one bit in the timestamp of the segment's first
// record (offset 32, right after the segment header): its checksum fails
// and recovery looks for the next record.
func flipTimestamp(seg []byte) { seg[32+8] ^= 0x10 }

// killedMidAppend leaves what a kill after the payload was copied but
// before the checksum and the id were stored leaves: a zero id and
// checksum.
func killedMidAppend(seg []byte) {
	n := binary.LittleEndian.Uint32(seg[32+16:])
	binary.LittleEndian.PutUint64(seg[32:], 0)
	binary.LittleEndian.PutUint32(seg[32+24+int(n):], 0)
}

// runForgeCase stores a forging item in a Sync WAL (the sink down, Stop out
// of time), damages its record, and starts a queue on the directory: it
// returns what that queue delivered and its Stats, and checks that an item
// accepted after the restart in Sync mode is still replayed by the queue
// after it.
func runForgeCase(t *testing.T, tc forgeCase, forged [][]byte) ([][]byte, Stats) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	q, err := New(sinkDownConfig(dir, Sync))
	if err != nil {
		t.Fatal(err)
	}
	evil := forgingItem(rng, tc.id, forged)
	if err := q.Enqueue(evil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	seg := segmentFiles(t, dir)[0]
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, evil) {
		t.Fatal("the item is not stored as it is: the test's premise (a raw payload) does not hold")
	}
	tc.damage(data)
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var got [][]byte
	q2, err := New(Config[[]byte]{
		Send: func(_ context.Context, b [][]byte) error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range b {
				got = append(got, bytes.Clone(v))
			}
			return nil
		},
		FlushInterval: 10 * time.Millisecond,
		WAL:           WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Enqueue([]byte("accepted after the restart")); err != nil {
		t.Fatal(err)
	}
	if err := q2.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := q2.Stats()
	if err := q2.Close(); err != nil {
		t.Fatal(err)
	}

	// Accepted in Sync mode, then the sink goes away: the item must be on
	// disk for the next queue.
	q3, err := New(sinkDownConfig(dir, Sync))
	if err != nil {
		t.Fatal(err)
	}
	if err := q3.Enqueue([]byte("durable")); err != nil {
		t.Fatal(err)
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel3()
	_ = q3.Stop(ctx3)
	s4 := newSink[string]()
	q4, err := New(Config[string]{Send: s4.send, FlushInterval: 10 * time.Millisecond,
		WAL: WALConfig{Dir: dir, Mode: Sync, SegmentSize: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if err := q4.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q4.Close(); err != nil {
		t.Fatal(err)
	}
	if s4.seen["durable"] != 1 {
		t.Errorf("an item accepted in Sync mode was not replayed (delivered %v)", s4.seen)
	}
	mu.Lock()
	defer mu.Unlock()
	return got, st
}

var forgedItems = [][]byte{[]byte("FORGED transfer to mallory 1000000"), []byte("FORGED admin=true")}

// TestWALForgedRecordCannotNameAFarID: items are user data, and after
// damage recovery looks for the next record at every 8-byte offset, inside
// the damaged record's payload too. A record forged inside an item with an
// id near 2^64 once made Open allocate a slot per skipped id (out of
// memory at every start: a crash loop) and would have wrapped the next id
// to zero. An id is now believed only where the bytes before it could
// have held the ids before it.
func TestWALForgedRecordCannotNameAFarID(t *testing.T) {
	for _, tc := range []forgeCase{
		{"bit flip", math.MaxUint64, flipTimestamp},
		{"killed mid-append", math.MaxUint64, killedMidAppend},
		{"bit flip, id 2^40", 1 << 40, flipTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st := runForgeCase(t, tc, forgedItems)
			for _, v := range got {
				if bytes.HasPrefix(v, []byte("FORGED")) {
					t.Errorf("delivered an item nobody enqueued: %q", v)
				}
			}
			if st.Corrupt > 1 {
				t.Errorf("Stats.Corrupt = %d after damage to one record", st.Corrupt)
			}
		})
	}
}

// TestWALResyncNeverTakesRecordsFromInsideAPayload: an item holding bytes
// shaped like a WAL record with a plausible id (the next one: 1 in a fresh
// directory) must stay item bytes when the record holding it is damaged or
// was being written when the process died. Recovery's look-ahead once took
// the forgery for the record itself: items nobody enqueued were delivered,
// with Stats.Corrupt 0 (the damage hidden), and a repair kept the forgery
// as an intact record. A segment's records are now framed under a salt
// the producer never sees (the wal package's format.go), so a forgery
// fails to verify; the damaged record is lost and counted.
func TestWALResyncNeverTakesRecordsFromInsideAPayload(t *testing.T) {
	for _, tc := range []forgeCase{
		{"bit flip", 1, flipTimestamp},
		{"killed mid-append", 1, killedMidAppend},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, st := runForgeCase(t, tc, forgedItems)
			for _, v := range got {
				if bytes.HasPrefix(v, []byte("FORGED")) {
					t.Errorf("delivered an item nobody enqueued: %q (Stats.Corrupt %d)", v, st.Corrupt)
				}
			}
			if st.Corrupt != 1 {
				t.Errorf("Stats.Corrupt = %d, want 1: the damaged record is lost, and counted", st.Corrupt)
			}
		})
	}
}
