package vinequeue

import (
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// gateCodec is the []byte codec, except that the second encoding of item
// held (the first is its Sync-mode record, the second its parked dead
// letter) signals entered and waits for open.
type gateCodec struct {
	held          string
	entered, open chan struct{}
	mu            sync.Mutex
	seen          int
}

func (c *gateCodec) Append(dst, v []byte) ([]byte, error) {
	if string(v) == c.held {
		c.mu.Lock()
		c.seen++
		second := c.seen == 2
		c.mu.Unlock()
		if second {
			close(c.entered)
			<-c.open
		}
	}
	return append(dst, v...), nil
}

func (c *gateCodec) Decode(src []byte) ([]byte, error) { return slices.Clone(src), nil }

// waitDelivered polls until key's deliveries equal want.
func waitDelivered(t *testing.T, s *parkSink, key uint64, want []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(s.delivered(key), want) {
		if time.Now().After(deadline) {
			t.Fatalf("key %d delivered %v; want %v", key, s.delivered(key), want)
		}
		time.Sleep(time.Millisecond) // polling, not waiting for an event's time
	}
}

// TestParkKeysDivertDoesNotStallOtherKeys: while a sender writes a parked
// key's dead letter (held here inside the codec, as a slow fsync would
// hold it), other keys' batches are still sent; and a release that
// delivers the key's older dead letters meanwhile does not strand the one
// being written: it is delivered after them, in the key's order.
func TestParkKeysDivertDoesNotStallOtherKeys(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := newParkSink()
	s.poisoned.Store("1/0", true)
	c := &gateCodec{held: "1/5", entered: make(chan struct{}), open: make(chan struct{})}
	cfg := parkConfig(t.TempDir(), Sync, s)
	cfg.Codec = c
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opened := false
	defer func() {
		if !opened {
			close(c.open)
		}
		_ = q.Stop(t.Context())
	}()
	enqueueKeys(t, q, []uint64{1}, 0, 5)
	flushT(t, q)
	d, parked := failedLetter(t, q)
	if parked != 4 {
		t.Fatalf("%d items parked; want 4", parked)
	}
	// Key 1 is parked: item 5 is diverted, and its dead letter's write
	// waits in the codec on a sender.
	enqueueKeys(t, q, []uint64{1}, 5, 6)
	select {
	case <-c.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("item 1/5 was not diverted")
	}
	// Other keys flow meanwhile (every sender used to wait for that write).
	enqueueKeys(t, q, []uint64{2, 3}, 0, 10)
	waitDelivered(t, s, 2, seqs(0, 10))
	waitDelivered(t, s, 3, seqs(0, 10))
	// Key 1's older dead letters are released and delivered meanwhile.
	s.poisoned.Delete("1/0")
	if n, err := q.RequeueDeadLetters(d.ID); err != nil || n != 1 {
		t.Fatalf("RequeueDeadLetters = %d, %v", n, err)
	}
	waitDelivered(t, s, 1, seqs(0, 5))
	// A Flush now covers 1/5 (accepted before it): it waits for the
	// divert's batch and then for the release that batch asks for.
	flushed := make(chan error, 1)
	go func() { flushed <- q.Flush(t.Context()) }()
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned (%v) while 1/5 was being parked", err)
	case <-time.After(50 * time.Millisecond): // a bound for the bug to show, not an event's time
	}
	// The write finishes: 1/5 is parked behind nothing and is released.
	opened = true
	close(c.open)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if got := s.delivered(1); !slices.Equal(got, seqs(0, 6)) {
		t.Fatalf("after Flush key 1 delivered %v; want 0..5", got)
	}
	st := q.Stats()
	if st.ParkedKeys != 0 || st.ParkedItems != 0 || st.Buffered != 0 {
		t.Fatalf("Stats: ParkedKeys %d, ParkedItems %d, Buffered %d; want 0", st.ParkedKeys, st.ParkedItems, st.Buffered)
	}
	checkIdentity(t, st)
	if ds, err := q.DeadLetters(); err != nil || len(ds) != 0 {
		t.Fatalf("dead letters left: %+v, %v", ds, err)
	}
	// Key 1 flows again.
	enqueueKeys(t, q, []uint64{1}, 6, 8)
	flushT(t, q)
	waitDelivered(t, s, 1, seqs(0, 8))
}
