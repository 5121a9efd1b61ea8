package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// refusingCodec is bytesCodec refusing the item "bad": the WAL cannot take
// it, so it is delivered from memory only.
type refusingCodec struct{ bytesCodec }

func (c refusingCodec) Append(dst []byte, v []byte) ([]byte, error) {
	if string(v) == "bad" {
		return dst, errors.New("refused")
	}
	return c.bytesCodec.Append(dst, v)
}

// TestAttackDurableMarkKeyedUnwritable: a keyed item the WAL cannot take
// (its codec refuses it) waits in its key's shard behind a batch held in
// Send; a checkpoint takes it into the shard and fails to write it (span
// id 0). That checkpoint does not move DurableThrough. Once the held batch
// is delivered, the item is cut from the shard into a batch that Send
// holds in turn: the item is neither delivered nor on disk, so no later
// checkpoint may move DurableThrough past its acceptance while that batch
// is in Send (a SIGKILL then would lose an item the mark claimed). Once
// Send returns nil, the mark moves on.
func TestAttackDurableMarkKeyedUnwritable(t *testing.T) {
	defer goleak.VerifyNone(t)
	holdA, holdBad := make(chan struct{}), make(chan struct{})
	enteredA, enteredBad := make(chan struct{}, 1), make(chan struct{}, 1)
	starts := make(chan time.Time, 1024)
	q := periodicQueue(t, 5*time.Millisecond, func(ctx context.Context, b [][]byte) error {
		for _, it := range b {
			switch {
			case bytes.Equal(it, []byte("a")):
				enteredA <- struct{}{}
				<-holdA
				return nil
			case bytes.Equal(it, []byte("bad")):
				enteredBad <- struct{}{}
				<-holdBad
				return nil
			}
		}
		return nil
	}, func(c *Config[[]byte]) {
		c.Codec = refusingCodec{}
		c.CheckpointStarted = func(start time.Time) {
			select {
			case starts <- start:
			default:
			}
		}
	})
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s never happened; stats %+v", what, q.Stats())
		}
	}
	if err := q.EnqueueKey(1, []byte("a")); err != nil {
		t.Fatal(err)
	}
	wait(enteredA, "the first batch in Send")
	for _, it := range []string{"bad", "c"} {
		if err := q.EnqueueKey(1, []byte(it)); err != nil {
			t.Fatal(err)
		}
	}
	accepted := time.Now() // "bad" was accepted before this
	awaitWALError(t, q)    // a checkpoint took "bad" into its shard and failed to write it
	close(holdA)
	wait(enteredBad, "the batch holding the unwritable item in Send")
	markHeldUntilDelivered(t, q, starts, accepted, holdBad)
}

// TestAttackDurableMarkUnkeyedUnwritable: the same for an Enqueue item the
// codec refuses, in a batch held in Send: a checkpoint writes the batch
// (the item under a span of id 0, in memory only) and that checkpoint
// does not move the mark; no later one may move it past the item while
// the batch is in Send.
func TestAttackDurableMarkUnkeyedUnwritable(t *testing.T) {
	defer goleak.VerifyNone(t)
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	starts := make(chan time.Time, 1024)
	q := periodicQueue(t, 5*time.Millisecond, func(ctx context.Context, b [][]byte) error {
		for _, it := range b {
			if bytes.Equal(it, []byte("bad")) {
				entered <- struct{}{}
				<-hold
			}
		}
		return nil
	}, func(c *Config[[]byte]) {
		c.Codec = refusingCodec{}
		c.CheckpointStarted = func(start time.Time) {
			select {
			case starts <- start:
			default:
			}
		}
	})
	for _, it := range []string{"a", "bad", "c"} {
		if err := q.EnqueueSlow([]byte(it)); err != nil {
			t.Fatal(err)
		}
	}
	accepted := time.Now()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the batch never reached Send")
	}
	awaitWALError(t, q) // a checkpoint wrote the batch, the item refused
	markHeldUntilDelivered(t, q, starts, accepted, hold)
}

// awaitWALError waits until the queue has met a write error (a
// checkpoint tried to write the unwritable item).
func awaitWALError(t *testing.T, q *Queue[[]byte]) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for q.walErrors.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint tried to write the item; stats %+v", q.Stats())
		}
		time.Sleep(time.Millisecond) // polling a counter
	}
}

// markHeldUntilDelivered is the end of both tests above. Three checkpoints
// start after the unwritable item was accepted, while its batch is held in
// Send: at least two have ended (each waits for the one before) and could
// have moved the mark, which must not pass the item's acceptance. Then it
// lets the batch go (closing hold): once delivered, the mark must pass it.
func markHeldUntilDelivered(t *testing.T, q *Queue[[]byte], starts <-chan time.Time, accepted time.Time, hold chan struct{}) {
	t.Helper()
	for n := 0; n < 3; {
		select {
		case s := <-starts:
			if s.After(accepted) {
				n++
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no checkpoint")
		}
	}
	if d := q.Stats().DurableThrough; d.After(accepted) {
		t.Errorf("DurableThrough %v after the acceptance of an item that is in Send, not on disk (accepted before %v, %v earlier)", d, accepted, d.Sub(accepted))
	}
	close(hold)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	deadline := after.Add(20 * time.Second)
	for !q.Stats().DurableThrough.After(after) {
		if time.Now().After(deadline) {
			t.Fatalf("DurableThrough never passed the delivered item: %+v", q.Stats())
		}
		time.Sleep(time.Millisecond) // polling the mark
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
