package engine

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestDurableThroughIsCheckpointStart: DurableThrough is the start of the
// last checkpoint, taken before it cuts anything. An item accepted after a
// checkpoint started is not claimed by it, though that checkpoint writes it
// (it drains the rings later); the next checkpoint claims it, and by then
// it is in the WAL.
func TestDurableThroughIsCheckpointStart(t *testing.T) {
	defer goleak.VerifyNone(t)
	starts := make(chan time.Time, 16)
	release := make(chan struct{})
	sent := make(chan struct{})
	cfg := testConfig(func(context.Context, [][]byte) error { <-sent; return nil })
	cfg.Collectors = 1
	cfg.FlushInterval = time.Hour // no batch is cut but by a checkpoint
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: 5 * time.Millisecond}
	cfg.Codec = bytesCodec{}
	cfg.CheckpointStarted = func(start time.Time) {
		select { // one at a time while release is open; after, none waits
		case starts <- start:
		default:
		}
		<-release
	}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		close(sent)
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	}()
	if d := q.Stats().DurableThrough; !d.IsZero() {
		t.Fatalf("DurableThrough %v before any checkpoint, want zero", d)
	}
	first := <-starts // the checkpoint waits here, its start taken
	if err := q.EnqueueSlow([]byte("after the start")); err != nil {
		t.Fatal(err)
	}
	accepted := time.Now()
	release <- struct{}{}
	second := <-starts // the first checkpoint has finished
	if d := q.Stats().DurableThrough; !d.Equal(first) {
		t.Fatalf("DurableThrough %v after the first checkpoint, want its start %v", d, first)
	}
	if d := q.Stats().DurableThrough; !d.Before(accepted) {
		t.Fatalf("DurableThrough %v claims the item accepted at %v, after the checkpoint's start", d, accepted)
	}
	release <- struct{}{}
	<-starts // the second has finished
	d := q.Stats().DurableThrough
	if !d.Equal(second) || !d.After(accepted) {
		t.Fatalf("DurableThrough %v after the second checkpoint, want its start %v, after the item (%v)", d, second, accepted)
	}
	if n := q.wal.log.Stats().ItemsPending; n != 1 {
		t.Fatalf("%d items pending in the WAL, want the one claimed", n)
	}
}

// TestDurableThroughHeldByUnwrittenBatch: a batch handed on and not yet
// written holds the mark at the start of the checkpoint before it was cut,
// and no longer once written.
func TestDurableThroughHeldByUnwrittenBatch(t *testing.T) {
	var q Queue[int]
	var b pending[int]
	if got := q.durable.bound(100); got != 100 {
		t.Fatalf("bound %d with nothing unwritten, want the start 100", got)
	}
	q.registerUnwritten(&b, unwrittenSince(&b, 40))
	if got := q.durable.bound(100); got != 40 {
		t.Fatalf("bound %d with a batch cut after the checkpoint at 40 unwritten, want 40", got)
	}
	q.written(&b)
	q.written(&b) // once only
	if got := q.durable.bound(100); got != 100 {
		t.Fatalf("bound %d after the write, want 100", got)
	}
	b.spans = []span{{id: 3, n: 1}, {id: 0, n: 2}} // a write failed
	if s := unwrittenSince(&b, 40); s != sinceUnknown {
		t.Fatalf("since %d for a batch with items not on disk, want sinceUnknown", s)
	}
	b.spans = b.spans[:1]
	if s := unwrittenSince(&b, 40); s != 0 {
		t.Fatalf("since %d for a batch on disk, want 0 (not registered)", s)
	}
	q.durable.advance(90)
	q.durable.advance(40) // never back
	if got := q.durable.through.Load(); got != 90 {
		t.Fatalf("mark %d, want 90", got)
	}
}

// TestDurableThroughMonotonic: the mark carries a monotonic clock reading,
// so that comparing it with a caller's time.Now() is immune to wall-clock
// steps. With wall-clock instants only, a clock stepped forward during a
// checkpoint and back again would leave the mark ahead of the items
// accepted after the step back, claiming them before they are written.
func TestDurableThroughMonotonic(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := testConfig(func(context.Context, [][]byte) error { return nil })
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Periodic, SegmentSize: 1 << 20, SyncInterval: time.Millisecond}
	cfg.Codec = bytesCodec{}
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := q.Close(); err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	d := q.Stats().DurableThrough
	for d.IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("DurableThrough never moved")
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
		d = q.Stats().DurableThrough
	}
	if d == d.Round(0) { // Round(0) strips the monotonic reading
		t.Fatalf("DurableThrough %v has no monotonic clock reading", d)
	}
}

// TestDurableMarkUnknownClaimsNothing: a checkpoint held back by a batch of
// unknown acceptance (sinceUnknown) leaves a mark that never moved at zero,
// rather than at an instant of 1970.
func TestDurableMarkUnknownClaimsNothing(t *testing.T) {
	d := newDurableMark[int]()
	d.unwritten = map[int64]int{sinceUnknown: 1}
	d.advance(d.bound(d.nanos(time.Now())))
	if ns := d.through.Load(); ns != 0 {
		t.Fatalf("mark %v (%d ns) while a batch of unknown acceptance is unwritten, want zero", d.at(ns), ns)
	}
	d.unwritten = nil
	now := d.nanos(time.Now())
	d.advance(d.bound(now))
	if ns := d.through.Load(); ns != now {
		t.Fatalf("mark %d, want %d once nothing holds it", ns, now)
	}
}
