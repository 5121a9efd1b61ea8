package engine

import (
	"errors"
	"testing"
)

// bareQueue is a Queue with no goroutines, enough for the collector's
// cutting methods.
func bareQueue(batchSize int) *Queue[int] {
	q := &Queue[int]{free: make(chan *pending[int], 8), fixedSize: 8}
	q.batchSize.Store(int64(batchSize))
	return q
}

// TestInboxesAfterSizeShrank: adaptive sizing can shrink the batch size
// below what the collector's partial batch holds; the next take cuts that
// batch as it is and goes on. The durable inbox's take sliced with a
// negative length there and panicked on the collector goroutine.
func TestInboxesAfterSizeShrank(t *testing.T) {
	q := bareQueue(10)
	c := &collector[int]{q: q}
	c.durable = &pending[int]{items: []int{1, 2, 3, 4, 5, 6, 7}, spans: []span{{1, 0, 7}}}
	q.inbox.add([]int{8, 9, 10}, span{1, 7, 3})
	q.batchSize.Store(5)
	c.takeInbox()
	if c.ready.len() != 1 || len(c.ready.peek().items) != 7 || c.durable == nil || len(c.durable.items) != 3 {
		t.Fatalf("ready %d batches, durable %v; want the 7 cut and 3 waiting", c.ready.len(), c.durable)
	}

	q = bareQueue(10)
	c = &collector[int]{q: q}
	for i := range 7 {
		q.acks.inbox.add(i, span{})
		q.acks.uncut.Add(1)
	}
	c.takeAcks(false)
	q.batchSize.Store(5)
	for i := range 3 {
		q.acks.inbox.add(7+i, span{})
		q.acks.uncut.Add(1)
	}
	c.takeAcks(false)
	if c.ready.len() != 1 || len(c.ready.peek().items) != 7 || c.ack.acked == nil || len(c.ack.acked.items) != 3 {
		t.Fatalf("ready %d batches, acked %v; want the 7 cut and 3 waiting", c.ready.len(), c.ack.acked)
	}
}

// TestAckGroupOutcome: a group is done when the last batch holding its
// items finishes, and each caller gets the outcome of the batch holding its
// own item; the collector's own reference keeps it open while it is still
// cutting.
func TestAckGroupOutcome(t *testing.T) {
	q := bareQueue(2)
	c := &collector[int]{q: q}
	var g *ackGroup
	var idx []int
	for i := range 5 {
		var k int
		g, k = q.acks.inbox.add(i, span{})
		idx = append(idx, k)
		q.acks.uncut.Add(1)
	}
	c.takeAcks(true) // batches of 2, 2 and 1
	if c.ready.len() != 3 || g.refs.Load() != 3 {
		t.Fatalf("%d batches, %d refs; want 3 and 3", c.ready.len(), g.refs.Load())
	}
	if q.acks.uncut.Load() != 0 {
		t.Fatalf("uncut %d after cutting everything", q.acks.uncut.Load())
	}
	bs := c.ready.items()
	boom, later := errors.New("boom"), errors.New("later")
	settleAcks(bs[0], nil)
	settleAcks(bs[1], outcomeDropped(boom))
	select {
	case <-g.done:
		t.Fatal("done with a batch still out")
	default:
	}
	settleAcks(bs[2], outcomeDropped(later))
	<-g.done
	for i, want := range []error{nil, nil, boom, boom, later} {
		err := g.outcome(idx[i])
		if want == nil && err != nil || want != nil && (!errors.Is(err, ErrDropped) || !errors.Is(err, want)) {
			t.Errorf("item %d (index %d): outcome %v; want its own batch's (%v)", i, idx[i], err, want)
		}
	}
}
