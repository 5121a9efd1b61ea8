package engine

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/vineroute/vinequeue/wal"
)

type intCodec struct{}

func (intCodec) Append(dst []byte, v int) ([]byte, error) {
	return binary.AppendUvarint(dst, uint64(v)), nil
}

func (intCodec) Decode(src []byte) (int, error) {
	v, _ := binary.Uvarint(src)
	return int(v), nil
}

// periodicBare is a bare queue with the periodic tier over a log in a
// temporary directory, and its collector.
func periodicBare(t *testing.T) (*Queue[int], *collector[int], *wal.Log) {
	t.Helper()
	log, err := wal.Open(t.TempDir(), wal.Options{SegmentSize: 1 << 20, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = log.Close() })
	q := bareQueue(10)
	w := &walTier[int]{ringIntake: ringIntake[int]{q}, log: log, codec: intCodec{}}
	q.tier = periodicTier[int]{walTier: w, every: time.Second}
	return q, &collector[int]{q: q, since: 1}, log
}

// cutUnwritten makes a keyed batch of items of shard s as gather does for
// items from the rings: a ticket, registered unwritten, s in flight.
func cutUnwritten(c *collector[int], s *keyedShard[int], seq uint64, items ...int) *pending[int] {
	b := &pending[int]{items: items, keys: make([]uint64, len(items)), seq: seq, shards: []*keyedShard[int]{s}}
	c.registerKeyed(b)
	s.fly(b)
	return b
}

// TestKeyedBatchWrittenOnce: a keyed batch cut unwritten (periodic) is
// written at most once, and only if the collector claims it before its
// sender reports it delivered. When the collector settles the shard first
// (a checkpoint) it writes the batch and the sender, its Send over, finds
// the spans to acknowledge; when the sender took it first (delivered), the
// collector writes nothing; when a writer other than the collector claimed
// it (a sender whose batch failed for good), settleFlight waits for that
// write to be over. So the batch is delivered or on disk before
// settleFlight returns, which is what keeps a key's order in the WAL (a
// checkpoint writes what the shard holds after it only then).
func TestKeyedBatchWrittenOnce(t *testing.T) {
	q, c, log := periodicBare(t)
	s := &q.keyed.shards[0]

	// The collector first.
	b := cutUnwritten(c, s, 1, 1, 2, 3)
	if b.ticket == 0 || len(q.durable.unwritten) != 1 || len(q.durable.tickets) != 1 {
		t.Fatalf("ticket %d, %d registered unwritten; want a ticket and one", b.ticket, len(q.durable.unwritten))
	}
	c.settleFlight(s)
	if !b.onDisk() || log.Stats().Appended != 1 {
		t.Fatalf("after settleFlight: spans %v, %d records; want the batch written", b.spans, log.Stats().Appended)
	}
	q.settleSent(b, true, &recordWriter{}) // its Send returned nil
	if !b.onDisk() || b.claim.Load() != 0 {
		t.Fatalf("the sender took a batch the collector wrote: claim %x", b.claim.Load())
	}
	if len(q.durable.unwritten) != 0 || len(q.durable.tickets) != 0 {
		t.Fatalf("%d batches still registered unwritten", len(q.durable.unwritten))
	}
	s.inflight.Store(false) // finished

	// The sender first, delivered: nothing to write, not registered.
	b = cutUnwritten(c, s, 2, 4, 5)
	q.settleSent(b, true, &recordWriter{})
	if len(q.durable.unwritten) != 0 || len(q.durable.tickets) != 0 {
		t.Fatalf("%d batches still registered unwritten after delivery", len(q.durable.unwritten))
	}
	c.settleFlight(s)
	if got := log.Stats().Appended; got != 1 || len(b.spans) != 0 {
		t.Fatalf("%d records, spans %v; want the delivered batch not written", got, b.spans)
	}
	s.inflight.Store(false)

	// Another writer first (its Send failed for good): settleFlight
	// waits for that write.
	b = cutUnwritten(c, s, 3, 6, 7)
	if !b.claimToWrite(b.ticket, &q.durable.waits) {
		t.Fatal("a writer could not claim an unclaimed batch")
	}
	settled := make(chan uint64)
	go func() {
		c.settleFlight(s)
		settled <- log.Stats().Appended // what is on disk once it returns
	}()
	q.writeClaimed(b, b.ticket, &recordWriter{})
	if atSettle := <-settled; atSettle != 2 {
		t.Fatalf("settleFlight returned with %d records written; want it to wait for the other write", atSettle)
	}
	if got := log.Stats().Appended; got != 2 || !b.onDisk() {
		t.Fatalf("%d records, spans %v; want that write alone", got, b.spans)
	}
	s.inflight.Store(false)

	// Held by its sender (parking's divert), then every item parked and
	// the batch finished: settleFlight waits for the hold and writes
	// nothing.
	b = cutUnwritten(c, s, 4, 8)
	if !b.hold(&q.durable.waits) {
		t.Fatal("the sender could not hold an unclaimed batch")
	}
	go func() {
		c.settleFlight(s)
		settled <- 0
	}()
	b.retire(&q.durable.waits) // finished while held
	s.inflight.Store(false)
	<-settled
	if got := log.Stats().Appended; got != 2 {
		t.Fatalf("%d records; want the collector to write nothing", got)
	}
}

// TestCheckpointWritesUnwrittenInCutOrder: a checkpoint's pass over the
// registry writes every batch handed on and not delivered, keyed or not,
// in cut order (so a key's batches replay in its order), skips a batch
// taken as delivered, and leaves one another writer claimed registered
// until that write is over.
func TestCheckpointWritesUnwrittenInCutOrder(t *testing.T) {
	q, c, log := periodicBare(t)
	c.since = 50 // the last checkpoint's start
	var bs []*pending[int]
	for seq := range uint64(5) {
		b := &pending[int]{items: []int{int(seq)}, seq: seq}
		q.registerUnwritten(b, c.since)
		bs = append(bs, b)
	}
	q.settleSent(bs[1], true, &recordWriter{})               // delivered before the checkpoint
	if !bs[3].claimToWrite(bs[3].ticket, &q.durable.waits) { // another writer's, not over yet
		t.Fatal("could not claim")
	}
	c.writeUnwritten()
	if got := log.Stats().Appended; got != 3 {
		t.Fatalf("%d records; want the 3 batches neither delivered nor claimed", got)
	}
	var last uint64
	for _, i := range []int{0, 2, 4} {
		if !bs[i].onDisk() || bs[i].spans[0].id <= last {
			t.Fatalf("batch %d: spans %v after record %d; want it written, in cut order", i, bs[i].spans, last)
		}
		last = bs[i].spans[0].id
	}
	if len(bs[1].spans) != 0 {
		t.Fatalf("the delivered batch was written: %v", bs[1].spans)
	}
	if n := len(q.durable.tickets); n != 1 {
		t.Fatalf("%d batches registered; want the one another writer holds", n)
	}
	if got := q.durable.bound(1 << 40); got != c.since {
		t.Fatalf("bound %d; want %d while that write is under way", got, c.since)
	}
}

// TestKeyedStopCutsABatchAtATime: Stop cuts a shard's backlog one batch
// ahead of its sender (cutStop), so that the first batches go out at once
// rather than after the whole backlog is cut, and the next goes as soon as
// the one before is finished; cutAll (Flush, Stop out of time) still cuts
// everything.
func TestKeyedStopCutsABatchAtATime(t *testing.T) {
	q := bareQueue(10)
	q.tier = memoryTier[int]{}
	q.keyed.used.Store(true)
	c := &collector[int]{q: q}
	s := &q.keyed.shards[0]
	s.mu.Lock()
	for i := range 45 {
		s.push(i, 0, false, 0)
	}
	s.queued.Store(int64(len(s.items)))
	s.mu.Unlock()

	c.cutKeyed(cutStop) // one batch goes, one more waits behind it
	if c.ready.len() != 1 || s.cutq.len() != 1 || s.backlog() != 25 {
		t.Fatalf("first cutStop: %d ready, %d cut and waiting, %d uncut; want 1, 1, 25", c.ready.len(), s.cutq.len(), s.backlog())
	}
	c.cutKeyed(cutStop) // the first is in flight: nothing more is cut
	if c.ready.len() != 1 || s.cutq.len() != 1 || s.backlog() != 25 {
		t.Fatalf("second cutStop: %d ready, %d cut and waiting, %d uncut; want 1, 1, 25", c.ready.len(), s.cutq.len(), s.backlog())
	}
	c.cutKeyed(cutAll)
	if s.cutq.len() != 4 || s.backlog() != 0 {
		t.Fatalf("cutAll: %d cut and waiting, %d uncut; want 4, 0", s.cutq.len(), s.backlog())
	}
	got := 0
	for _, b := range append(c.ready.items(), s.cutq.items()...) {
		for _, v := range b.items {
			if v != got {
				t.Fatalf("item %d cut where %d was due", v, got)
			}
			got++
		}
	}
	if got != 45 {
		t.Fatalf("%d items cut; want 45", got)
	}
}

// TestCheckpointWaitsForHeldBatch: while a sender holds its batch (parking
// moves items of parked keys out of it), a checkpoint's pass waits rather
// than write items that are changing; once released, it writes what is
// left.
func TestCheckpointWaitsForHeldBatch(t *testing.T) {
	q, c, log := periodicBare(t)
	c.since = 50
	b := &pending[int]{items: []int{1, 2, 3}, seq: 7}
	q.registerUnwritten(b, c.since)
	if !b.hold(&q.durable.waits) {
		t.Fatal("could not hold an unclaimed batch")
	}
	done := make(chan struct{})
	go func() {
		c.writeUnwritten()
		close(done)
	}()
	b.items = b.items[:2] // as divert: an item leaves while held
	select {
	case <-done:
		t.Fatal("the checkpoint's pass returned while the batch was held")
	case <-time.After(20 * time.Millisecond): // it waits: a bounded look, not a wait for an event
	}
	if got := log.Stats().Appended; got != 0 {
		t.Fatalf("%d records written while held", got)
	}
	b.release(&q.durable.waits)
	<-done
	if ls := log.Stats(); ls.Appended != 1 || ls.Items != 2 || !b.onDisk() {
		t.Fatalf("%d records of %d items, spans %v; want the 2 items left written", ls.Appended, ls.Items, b.spans)
	}
}
