package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/vineroute/vinequeue/ring"
	"github.com/vineroute/vinequeue/shard"
)

// The central stage, sharded. A P hands its full rings to one central
// shard, always the same (P id modulo the shard count: a P id that appears
// when GOMAXPROCS grows maps onto an existing shard), and each shard has its
// own collector goroutine draining them into batches. One collector
// delivers about 1 ns of work per 8-byte item and 9–29 ns per 100-byte item
// (README, "The hot path"): a few busy producer cores saturate it, so on a
// large machine one collector per few Ps lets delivery grow with the cores.
//
// The first shard's collector is the primary: besides its rings it owns
// everything that needs one owner: the durable inbox, the keyed shards
// (EnqueueKey's order per key needs one cutter; its intake takes a lock per
// call and is not bounded by the collector), the replay, the unspilled
// batches, the periodic checkpoint, Flush and Stop. The other shards'
// collectors (secondaries) only drain their rings, cut, spill at the hard
// level, and dispatch their batches to the senders, which all shards share:
// Workers is the user's bound on concurrent Send calls, and sharding it too
// would multiply the load on the sink with the core count.
//
// What holds across shards:
//   - batch numbers come from one counter (Queue.seq), so Flush and Stop
//     wait for one tracker as before;
//   - Flush, the checkpoint and Stop reach every shard: the primary asks
//     each secondary (reqFlush, reqCheckpoint, reqStop) and waits for its
//     answer; a secondary answers at once (it never waits for the primary);
//   - the spare rings, the ring count and the hard-level stall are the
//     queue's, not a shard's; Queue.stalledShards counts the collectors
//     leaving rings full, so that a finishing batch wakes them all.
type central[T any] struct {
	// full holds the rings handed off by this shard's Ps (the "batch
	// transfer": one CAS per ring); its collector takes them all at once.
	// Padded: the head is the contended word.
	full shard.Stack[ring.SPSC[T], *ring.SPSC[T]]
	// wantsDrain: a producer of one of the shard's Ps found its ring full
	// with no spare to replace it, and waits (waitSpare); the collector
	// drains the shard's full current rings where they are (drainWaiting).
	wantsDrain atomic.Bool
	index      int
	wake       chan struct{} // cap 1: a ring was handed off, a batch finished at Hard
	reqs       chan request  // secondaries only: from the primary
}

// PsPerCollector is how many Ps share one central shard by default: one
// collector keeps up with about four producer cores of 8-byte items.
const PsPerCollector = 4

// DefaultCollectors is the number of central shards for procs Ps: one per
// PsPerCollector, at least one.
func DefaultCollectors(procs int) int { return max(1, (procs+PsPerCollector-1)/PsPerCollector) }

// makeCentrals makes n central shards; the primary's wake is q.wake.
func (q *Queue[T]) makeCentrals(n int) {
	q.centrals = make([]*central[T], max(n, 1))
	for i := range q.centrals {
		sh := &central[T]{index: i, wake: q.wake}
		if i > 0 {
			sh.wake = make(chan struct{}, 1)
			sh.reqs = make(chan request)
		}
		q.centrals[i] = sh
	}
}

// centralOf is the central shard of P id pid.
func (q *Queue[T]) centralOf(pid int) *central[T] { return q.centrals[pid%len(q.centrals)] }

func (sh *central[T]) wakeUp() {
	select {
	case sh.wake <- struct{}{}:
	default:
	}
}

// wakeCollectors wakes every collector: one that may be parked with work
// somewhere (a full ring whose shard is unknown here, memory fell).
func (q *Queue[T]) wakeCollectors() {
	for _, sh := range q.centrals {
		sh.wakeUp()
	}
}

// drainWaiting drains, where they are, the current rings of the shard's Ps
// that hold a batch, when a producer asked for it (wantsDrain: it found its
// ring full and no spare, and waits in waitSpare). Such a ring would have
// been handed off had a spare been there; with its producer waiting,
// reading it in place bounces no cache line. Draining it in the same
// wake-up as the rings handed off before it means that one park frees all
// of a P's rings, not one: the waiter gets a recycled ring as its spare and
// finds room in its current ring, so its P runs on several rings before it
// can run out again. A ring drained in place recycles no ring that would
// wake a waiter: recycled, the number of rings this drain recycled (each
// woke a waiter, if one was parked), is subtracted, and a waiter is poked
// (pokeWaiters) for each ring drained in place beyond it. Poking more would
// wake waiters that find the ring full again and park once more, which at
// a thousand producers is the cost this avoids.
//
// It runs after the handed-off rings were drained, so a P's older rings go
// first. Not at the hard level (holdRings): there full rings stay, as in
// drainRings, and the producers meet the Policy.
func (c *collector[T]) drainWaiting(recycled int) {
	q := c.q
	if !c.shard.wantsDrain.Load() || !c.shard.wantsDrain.Swap(false) {
		return
	}
	if q.holdRings() && !c.flushing {
		return
	}
	mark := q.watermark()
	var drained int32
	for _, s := range q.procs.Load().procs {
		if s.central != c.shard {
			continue
		}
		// As in drainRings: the ring may be handed off meanwhile, and
		// draining it again from the backlog later finds what is left.
		if r := s.Cur.Load(); r.Len() >= mark {
			c.drainRing(r)
			drained++
		}
		if s.handing.Load() != nil {
			c.handoffSeen = true
		}
	}
	q.pokeWaiters(drained - int32(min(recycled, int(drained))))
}

// shardRequest asks every secondary collector to do kind (reqFlush; the
// checkpoint has shardCheckpoint) and waits for them all. The primary calls it; a secondary
// answers at once, so the primary is held only for their drains.
func (c *collector[T]) shardRequest(kind requestKind) {
	secondaries := c.q.centrals[1:]
	if len(secondaries) == 0 {
		return
	}
	done := make(chan error, len(secondaries))
	for _, sh := range secondaries {
		sh.reqs <- request{kind: kind, done: done}
	}
	for range secondaries {
		<-done
	}
}

// errRingsUncertain is a secondary's answer to a checkpoint when it cannot vouch
// for having cut every item accepted before it (checkpointDrain).
var errRingsUncertain = errors.New("vinequeue: rings not all drained at the checkpoint")

// shardCheckpoint asks every secondary collector to take part in the
// checkpoint started at start (unix nanoseconds) and waits for them all;
// errRingsUncertain if one of them did not cut everything.
func (c *collector[T]) shardCheckpoint(start int64) error {
	secondaries := c.q.centrals[1:]
	done := make(chan error, len(secondaries))
	for _, sh := range secondaries {
		sh.reqs <- request{kind: reqCheckpoint, at: start, done: done}
	}
	var first error
	for range secondaries {
		if err := <-done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// collectShard is a secondary collector: it drains sh's rings into batches
// and hands them to the senders, as the primary does its own, and answers
// the primary's requests.
func (q *Queue[T]) collectShard(sh *central[T]) {
	c := &collector[T]{q: q, shard: sh, since: q.durable.origin}
	// As the primary's: a partial batch waits at most one tick.
	tick := time.NewTicker(q.cfg.FlushInterval / 2)
	defer tick.Stop()
	for {
		var out chan *pending[T]
		var next *pending[T]
		if c.ready.len() > 0 {
			out, next = q.work, c.ready.peek()
		} else if c.linger() {
			c.drain(false)
			continue
		}
		select {
		case out <- next:
			c.ready.pop()
			if len(c.backlog) > 0 || !sh.full.Empty() {
				c.drain(false)
			}
		case <-sh.wake:
			c.drain(false)
		case <-tick.C:
			c.drain(true)
		case req := <-sh.reqs:
			switch req.kind {
			case reqFlush:
				// As the primary's Flush: the rings even at Hard.
				c.flushing = true
				c.drain(true)
				c.flushing = false
			case reqCheckpoint:
				complete := c.checkpointDrain()
				c.writeReady()
				c.since = req.at
				if !complete {
					req.done <- errRingsUncertain
					continue
				}
			case reqStop:
				req.done <- c.stopShard(req.ctx)
				return
			}
			req.done <- nil
		}
	}
}

// stopShards tells every secondary collector to stop (stopShard) and
// returns the channel their answers arrive on, one each (its capacity).
func (c *collector[T]) stopShards(ctx context.Context) chan error {
	secondaries := c.q.centrals[1:]
	done := make(chan error, len(secondaries))
	for _, sh := range secondaries {
		sh.reqs <- request{kind: reqStop, ctx: ctx, done: done}
	}
	return done
}

// stopShard is a secondary's part of Stop (the primary's is stop): every
// ring is sealed by now, so a last drain takes what they hold; its batches
// go to the senders while ctx allows, and are given up (left in the WAL, or
// to OnDrop) when it ends.
func (c *collector[T]) stopShard(ctx context.Context) error {
	c.drain(true)
	if _, ok := c.q.tier.(periodicTier[T]); ok && c.q.stopCanEnd {
		// As the primary's stop: a Stop that can run out of time writes
		// what it cut, unwritten, now, while ctx runs (the primary's
		// writeUnwritten may have looked before this drain registered it).
		c.writeReady()
	}
	err := c.dispatch(ctx)
	if err != nil {
		c.writeReady() // a tier that writes undelivered batches: left in the WAL, not lost
		given := append([]*pending[T](nil), c.ready.items()...)
		c.ready.reset()
		c.q.giveUpAll(given, fmt.Errorf("%w: stop deadline: %w", ErrClosed, err), true)
	}
	return err
}
