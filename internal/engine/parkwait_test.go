package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/vineroute/vinequeue/wal"
)

// TestNotParkedHoldsItsKeyBehind: an item of a parked key whose parked
// dead letter the full WAL refuses stays in the main log, for the next New
// to park behind its key's dead letters. Its key's later items must not be
// parked meanwhile (room having freed): their dead letters would go ahead
// of it, and the next New would park it after them. They stay in the main
// log behind it.
func TestNotParkedHoldsItsKeyBehind(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, [][]byte) error { return nil })
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 64 << 10, MaxBytes: 256 << 10}
	cfg.Codec = bytesCodec{}
	cfg.ParkKeys = true
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Stop(t.Context()) }()
	const key = 7
	p := q.park
	p.addLetter(1<<40, []uint64{key}, 1) // a failed dead letter holds key: it is parked
	// Fill MaxBytes with dead letters of no key, to the last few bytes.
	var fill []uint64
	for _, size := range []int{8 << 10, 1 << 10, 128, 16, 1} {
		for range 100 {
			pad := make([]byte, size)
			rand.Read(pad) // incompressible
			id, err := q.wal.log.DeadLetter(wal.AppendFrame(nil, pad), wal.DeadMeta{Reason: "filler"})
			if errors.Is(err, wal.ErrFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			fill = append(fill, id)
		}
	}
	// Items "in the main log" (spans name records; never acknowledged
	// here: not parked, or left).
	batch := func(v string, rec uint64) *pending[[]byte] {
		b := q.getBatch()
		b.items = append(b.items[:0], []byte(v))
		b.keys = append(b.keys[:0], key)
		b.spans = append(b.spans[:0], span{id: rec, n: 1})
		b.bytes = q.bytesOf(b.items)
		q.hold(b.bytes)
		return b
	}
	var slot senderSlot[[]byte]
	if q.take(&slot, batch("k/1", 1<<30)) {
		t.Fatal("k/1, of a parked key, taken to be sent")
	}
	if n := q.leftOnDisk.Load(); n != 1 {
		t.Fatalf("LeftOnDisk %d: k/1 was not refused by the full WAL (filler dead letters %d)", n, len(fill))
	}
	if _, err := q.wal.log.PurgeDeadLetters(fill...); err != nil {
		t.Fatal(err)
	}
	if q.take(&slot, batch("k/2", 1<<30+1)) {
		t.Fatal("k/2, of a parked key, taken to be sent")
	}
	ds, err := q.wal.log.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Parked {
			t.Fatalf("k/2 parked in dead letter %d, ahead of k/1 left in the main log", d.ID)
		}
	}
	if n := q.leftOnDisk.Load(); n != 2 {
		t.Fatalf("LeftOnDisk %d, want k/1 and k/2", n)
	}
}
