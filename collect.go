package vinequeue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/vineroute/vinequeue/governor"
)

// The collector is the single consumer of every P ring and keyed shard. It
// cuts batches, hands them to the senders, answers Flush and Stop, and wakes
// producers waiting for ring space. It is the only goroutine that touches
// cur, ready and the shards' cut queues, so they need no lock.
type collector[T any] struct {
	q     *Queue[T]
	cur   *batch[T]   // the batch being filled from the rings
	ready []*batch[T] // cut, waiting for a sender, oldest first
	seq   uint64      // the next batch's sequence number
}

func (q *Queue[T]) collect() {
	c := &collector[T]{q: q}
	// A tick every half FlushInterval bounds an item's wait: it is in a
	// ring at most one period before a tick drains it, and every tick cuts
	// the partial batch. An idle queue wakes only for these ticks.
	tick := time.NewTicker(q.cfg.FlushInterval / 2)
	defer tick.Stop()
	for {
		var out chan *batch[T]
		var next *batch[T]
		if len(c.ready) > 0 {
			out, next = q.work, c.ready[0]
		}
		select {
		case out <- next:
			c.ready[0] = nil
			c.ready = c.ready[1:]
			continue
		case <-q.wake:
			c.drain(false)
		case <-tick.C:
			q.gov.Refresh()
			c.drain(true)
		case req := <-q.reqs:
			switch req.kind {
			case reqFlush:
				c.drain(true)
				c.cutKeyed(true)
				q.track.wait(c.seq, req.done)
			case reqStop:
				c.stop(req)
				return
			}
		}
		c.cutKeyed(false)
	}
}

// drain moves everything in the rings into batches; with cutPartial, the
// partial batch is cut too.
func (c *collector[T]) drain(cutPartial bool) {
	q := c.q
	if q.gov.Level() == governor.LevelHard && !q.closing.Load() {
		// Memory is at the hard level: leave the items in the rings so
		// producers meet full rings and the Policy. Senders wake us as
		// they finish batches.
		if cutPartial && c.cur != nil && len(c.cur.items) > 0 {
			c.cut()
		}
		return
	}
	t := q.rings.Load()
	size := int(q.batchSize.Load())
	for _, r := range t.rings {
		// Stop at the hard level: the overshoot is at most one batch.
		for r.Len() > 0 && (q.gov.Level() != governor.LevelHard || q.closing.Load()) {
			if c.cur == nil {
				c.cur = q.getBatch()
			}
			before := len(c.cur.items)
			c.cur.items = r.Drain(c.cur.items, size-before)
			// Counted as soon as drained, so the level check above
			// sees them: the overshoot past Hard is one drain's worth.
			n := q.bytesOf(c.cur.items[before:])
			c.cur.bytes += n
			q.hold(n)
			if len(c.cur.items) >= size {
				c.cut()
			}
		}
	}
	if cutPartial && c.cur != nil && len(c.cur.items) > 0 {
		c.cut()
	}
	if q.spaceWaiters.Load() > 0 {
		q.spaceMu.Lock()
		q.spaceGen++
		q.spaceCond.Broadcast()
		q.spaceMu.Unlock()
	}
}

func (c *collector[T]) cut() {
	b := c.cur
	c.cur = nil
	c.push(b)
}

func (c *collector[T]) push(b *batch[T]) {
	b.seq = c.seq
	c.seq++
	c.q.track.cut(b.seq)
	c.ready = append(c.ready, b)
}

// cutKeyed cuts batches from keyed shards with no batch in flight (their
// batches go to Send one at a time); with all, it first cuts every item in
// every shard, so a Flush covers them.
func (c *collector[T]) cutKeyed(all bool) {
	q := c.q
	if all || q.keyed.work.Load() > 0 {
		q.keyed.cutAll(c, int(q.batchSize.Load()), all)
	}
}

// stop is the collector's part of Stop: by now every ring is sealed and every
// push that saw an unsealed ring has finished (Stop's barrier), so a last
// drain collects every accepted item.
func (c *collector[T]) stop(req request) {
	q := c.q
	c.drain(true)
	c.cutKeyed(true)
	waitDone := make(chan error, 1)
	q.track.wait(c.seq, waitDone)
	var err error
	for len(c.ready) > 0 || q.keyed.hasWork() {
		var out chan *batch[T]
		var next *batch[T]
		if len(c.ready) > 0 {
			out, next = q.work, c.ready[0]
		}
		select {
		case out <- next:
			c.ready[0] = nil
			c.ready = c.ready[1:]
		case <-q.wake:
		case <-req.ctx.Done():
			err = req.ctx.Err()
		}
		if err != nil {
			break
		}
		c.cutKeyed(false)
	}
	if err == nil {
		select {
		case err = <-waitDone:
		case <-req.ctx.Done():
			err = req.ctx.Err()
		}
	}
	if err != nil {
		// Out of time: what is not yet with a sender is dropped and
		// counted; senders see their context cancelled and drop what
		// they hold once Send returns.
		q.sendCancel()
		reason := fmt.Errorf("%w: stop deadline: %w", ErrClosed, err)
		for _, b := range c.ready {
			q.drop(b, reason)
		}
		c.ready = nil
		for _, b := range q.keyed.takeAll() {
			q.drop(b, reason)
		}
	}
	close(q.work)
	req.done <- err
}

// errStopped is what Flush reports when Stop ends it.
var errStopped = errors.New("stopped")

// Flush returns once every item accepted before the call has been delivered
// or given up on (OnDrop), or ctx is done.
func (q *Queue[T]) Flush(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case q.reqs <- request{kind: reqFlush, ctx: ctx, done: done}:
	case <-q.stopDone:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop stops accepting items (Enqueue returns ErrClosed from the moment Stop
// is called) and delivers everything accepted. When ctx ends first, what is
// undelivered goes to OnDrop, is counted in Stats.Dropped, and Stop returns
// ctx's error. Stop waits for the queue's goroutines to exit. Calling it again
// returns the first call's result.
func (q *Queue[T]) Stop(ctx context.Context) error {
	q.stopOnce.Do(func() {
		q.stopErr = q.stop(ctx)
		close(q.stopDone)
	})
	<-q.stopDone
	return q.stopErr
}

// Close is Stop(context.Background()).
func (q *Queue[T]) Close() error { return q.Stop(context.Background()) }

func (q *Queue[T]) stop(ctx context.Context) error {
	q.growMu.Lock()
	q.closing.Store(true)
	q.closedCancel()
	for _, r := range q.rings.Load().rings {
		r.Seal()
	}
	q.growMu.Unlock()
	q.keyed.seal()
	// Barrier: a push that read an unsealed ring is still pinned to its P,
	// and a pinned goroutine cannot be stopped. Stopping the world therefore
	// waits for every such push to finish and publish its item; after it,
	// the collector's last drain sees them all. ReadMemStats stops the world.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// Wake producers waiting for space: they will see the queue closing.
	q.spaceMu.Lock()
	q.spaceGen++
	q.spaceCond.Broadcast()
	q.spaceMu.Unlock()

	done := make(chan error, 1)
	q.reqs <- request{kind: reqStop, ctx: ctx, done: done}
	err := <-done
	<-q.done
	q.sendCancel()
	q.gov.Close()
	if err != nil {
		return fmt.Errorf("vinequeue: stop: %w", err)
	}
	return nil
}
