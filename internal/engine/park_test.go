package engine

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// orderCodec is bytesCodec that records what it encodes and holds the
// encoding of item held until open is closed (entered is closed first).
type orderCodec struct {
	held          string
	entered, open chan struct{}
	encoded       chan string
}

func (c *orderCodec) Append(dst, v []byte) ([]byte, error) {
	if string(v) == c.held {
		close(c.entered)
		<-c.open
	}
	c.encoded <- string(v)
	return append(dst, v...), nil
}

func (c *orderCodec) Decode(src []byte) ([]byte, error) { return append([]byte(nil), src...), nil }

// TestDivertSameKeyKeepsOrder: divert writes dead letters without
// parking.mu, so two senders may park the same key at once; the one that
// checked the key first writes first, so the key's dead letters keep its
// order (the releaser delivers them in id order).
func TestDivertSameKeyKeepsOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := &orderCodec{held: "a", entered: make(chan struct{}), open: make(chan struct{}), encoded: make(chan string, 4)}
	cfg := testConfig(func(context.Context, [][]byte) error { return nil })
	cfg.WAL = WALConfig{Dir: t.TempDir(), Mode: Sync, SegmentSize: 1 << 20}
	cfg.Codec = c
	cfg.ParkKeys = true
	q, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = q.Stop(t.Context()) }()
	const key = 7
	p := q.park
	p.addLetter(1<<40, []uint64{key}, 1) // a failed dead letter holds key: it is parked
	batch := func(v string) *pending[[]byte] {
		b := q.getBatch()
		b.items = append(b.items[:0], []byte(v))
		b.keys = append(b.keys[:0], key)
		b.bytes = q.bytesOf(b.items)
		q.hold(b.bytes)
		return b
	}
	first, second := batch("a"), batch("b")
	done := make(chan bool, 2)
	go func() { done <- p.divert(first) }()
	<-c.entered // first holds its reservation and writes "a"
	go func() { done <- p.divert(second) }()
	// second has reserved the key too: it waits for first, or (the bug)
	// writes "b" now.
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		n := p.writing[key].n
		p.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second divert did not reserve the key")
		}
		time.Sleep(time.Millisecond) // polling for the reservation
	}
	select {
	case v := <-c.encoded:
		t.Fatalf("%q written while the key's earlier dead letter was being written", v)
	case <-time.After(50 * time.Millisecond): // a bound for the bug to show, not an event's time
	}
	close(c.open)
	for range 2 {
		if !<-done {
			t.Fatal("divert left items of a parked key in the batch")
		}
	}
	ds, err := q.wal.log.DeadLetters()
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range ds {
		_, payload, err := q.wal.log.ReadDeadLetter(d.ID)
		if err != nil {
			t.Fatal(err)
		}
		items, err := q.wal.decode(nil, payload)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range items {
			order = append(order, string(v))
		}
	}
	if len(order) != 2 || order[0] != "a" || order[1] != "b" {
		t.Fatalf("dead letters in id order hold %q; want [a b]", order)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.writing) != 0 || p.keys[key] != 3 {
		t.Fatalf("after both: writing %v, key held by %d; want none, 3 dead letters", p.writing, p.keys[key])
	}
}
