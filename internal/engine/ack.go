package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Acknowledgement at a chosen level (EnqueueAck).
//
// AckDurable returns once the item is on disk and fsynced: with a log, by
// the durable inbox's path (appendDurable: the log's group commit, then the
// collector), in every tier; without one it waits as AckDelivered does,
// the sink being the only durability a memory queue has.
//
// AckDelivered returns once Send returned nil for the batch holding the
// item. Its items go through the ack inbox, beside the durable inbox:
// callers add their item (made as durable as the tier promises first:
// acceptAck) and take the inbox's current ack group, which the first of
// them created; every caller that adds before the collector takes the
// inbox shares that group. The collector cuts the items into its ack
// batch (acked), an ordinary batch of BatchSize that is cut when full,
// on the interval tick, for Flush and Stop, as a ring batch is: batches
// are never cut per caller or per group. Each batch lists the groups
// whose items it holds (pending.acks), and holds a reference to each; a
// group is done when its last batch is finished, and its channel is then
// closed once: one wake per group, and per batch one reference dropped
// per group, never per item. A group's items can go out in several
// batches (a take that fills one batch and starts the next), so the group
// keeps each batch's share of its items (ackShare) with that batch's
// outcome, and a caller returns the outcome of the batch that held its own
// item: a caller whose item was delivered is never told ErrDropped
// because another batch of its group failed.
//
// Ack batches are not spilled: the groups would have to follow their
// items through the WAL and back. So under Policy Spill, at the hard
// level, AckDelivered waits for memory to fall as EnqueueKey does.

// AckLevel is the root package's AckLevel, numbered as it is.
type AckLevel int

// The levels.
const (
	AckDurable AckLevel = 1 + iota
	AckDelivered
)

// ackGroup is what the EnqueueAck callers of one collector take wait on.
type ackGroup struct {
	// refs counts the batches holding the group's items that are not
	// finished, plus one while the collector is still cutting them
	// (taken by the caller that creates the group).
	refs atomic.Int64
	done chan struct{} // closed when refs falls to 0
	// shares are the batches holding the group's items, in the order of
	// the items (the order the callers added them): written by the
	// collector while it cuts the group, before it drops its reference;
	// read by the batches' settling and, after done, by the callers.
	shares []ackShare
	first  [2]ackShare // shares' backing for the usual one or two batches
}

// ackShare is one batch's share of a group's items: those below end (and
// at or above the previous share's end), and how the batch ended.
type ackShare struct {
	batch any // the *pending holding them, to find its share when it settles
	end   int
	err   atomic.Pointer[error] // nil: delivered
}

func newAckGroup() *ackGroup {
	g := &ackGroup{done: make(chan struct{})}
	g.shares = g.first[:0]
	g.refs.Store(1)
	return g
}

// release drops one reference.
func (g *ackGroup) release() {
	if g.refs.Add(-1) == 0 {
		close(g.done)
	}
}

// settle records how batch ended for the group's items it holds (nil:
// delivered) and drops its reference.
func (g *ackGroup) settle(batch any, outcome error) {
	if outcome != nil {
		for i := range g.shares {
			if s := &g.shares[i]; s.batch == batch {
				s.err.Store(&outcome)
				break
			}
		}
	}
	g.release()
}

// outcome is how the batch holding the group's item idx ended; read after
// done.
func (g *ackGroup) outcome(idx int) error {
	for i := range g.shares {
		if s := &g.shares[i]; idx < s.end {
			if p := s.err.Load(); p != nil {
				return *p
			}
			return nil
		}
	}
	return nil
}

// wait returns the outcome of the batch holding the group's item idx once
// the group is done, or, when ctx ends first, ctx's error wrapped: the item
// stays accepted.
func (g *ackGroup) wait(ctx context.Context, idx int) error {
	ctxDone := ctx.Done()
	select {
	case <-g.done:
	default:
		if ctxDone == nil { // a ctx that never ends: a receive, cheaper than a select
			<-g.done
			break
		}
		select {
		case <-g.done:
		case <-ctxDone:
			return fmt.Errorf("vinequeue: EnqueueAck: stopped waiting (the item stays accepted and is delivered as usual): %w", ctx.Err())
		}
	}
	return g.outcome(idx)
}

// ackInbox holds AckDelivered items not yet taken by the collector, with
// their spans (the sync tier: all of them; the other tiers: none), and the
// group their callers share. Callers add under mu; the collector takes
// everything at once; full spares it the lock while the inbox is empty.
type ackInbox[T any] struct {
	mu    sync.Mutex
	full  atomic.Bool // written under mu
	items []T
	spans []span
	group *ackGroup
}

// add appends v (at sp, when sp.n > 0) and returns the group its caller
// waits on, and v's index among the group's items.
func (in *ackInbox[T]) add(v T, sp span) (*ackGroup, int) {
	in.mu.Lock()
	if in.group == nil {
		in.group = newAckGroup()
	}
	g := in.group
	idx := len(in.items) // the inbox holds the group's items alone
	in.full.Store(true)
	in.items = append(in.items, v)
	if sp.n > 0 {
		in.spans = appendSpan(in.spans, sp.id, sp.off, sp.n)
	}
	in.mu.Unlock()
	return g, idx
}

// take swaps the inbox's contents for the given empty slices, and hands
// over the group (nil when the inbox is empty) with its collector
// reference.
func (in *ackInbox[T]) take(items []T, spans []span) ([]T, []span, *ackGroup) {
	if !in.full.Load() {
		return items, spans, nil
	}
	in.mu.Lock()
	in.full.Store(false)
	items, in.items = in.items, items
	spans, in.spans = in.spans, spans
	g := in.group
	in.group = nil
	in.mu.Unlock()
	return items, spans, g
}

// acks is the queue's EnqueueAck state.
type acks[T any] struct {
	inbox ackInbox[T]
	// accepted counts AckDelivered items accepted (AckDurable ones are
	// counted by the durable path); Stats adds them to Enqueued.
	accepted atomic.Uint64
	// uncut counts AckDelivered items not yet in a cut batch (in the
	// inbox, or in the collector's ack batch), for the wakes: a caller
	// adds its item first, then counts it, and wakes the collector when the
	// count reaches a multiple of BatchSize; the collector subtracts what
	// it cuts, and takes the inbox again while the count says a full batch
	// is there. Since callers count up one by one, a count that climbs to
	// BatchSize or past from below, after the collector last looked, passes
	// through BatchSize exactly, and that caller wakes it: one wake per
	// batch's worth, none lost. (Counting the inbox alone would miss a
	// batch split between the inbox and the collector's partial one,
	// after the collector took the inbox for another reason: its callers
	// would wait for the tick.)
	uncut atomic.Int64
}

// ackCut is the collector's side: the ack batch being filled and the
// inbox's spare slices. Collector-owned.
type ackCut[T any] struct {
	acked *pending[T]
	items []T
	spans []span
}

// EnqueueAck accepts v like Enqueue and returns once v has reached level
// (see the root package's EnqueueAck).
func (q *Queue[T]) EnqueueAck(ctx context.Context, v T, level AckLevel) error {
	switch level {
	case AckDurable:
		if q.wal != nil {
			return q.enqueueDurable(v)
		}
		// No log: the sink is the only durability there is.
	case AckDelivered:
	default:
		return fmt.Errorf("%w: EnqueueAck: level %d is neither AckDurable nor AckDelivered", ErrInvalidConfig, level)
	}
	g, idx, err := q.acceptAcked(v)
	if err != nil {
		return err
	}
	return g.wait(ctx, idx)
}

// enqueueDurable is AckDurable with a log: v is appended with the log's
// group commit and synced before the call returns (appendDurable), within
// the intake gate, then delivered through the durable inbox.
func (q *Queue[T]) enqueueDurable(v T) error {
	if !q.intake.enter() {
		return ErrClosed
	}
	defer q.intake.leave()
	one := [1]T{v}
	_, err := q.wal.appendDurable(one[:])
	return err
}

// acceptAcked admits v, makes it as durable as the tier promises
// (acceptAck) and adds it to the ack inbox, within the intake gate (so
// Stop's last take of the inbox sees it); it returns the group to wait on
// and v's index in it.
func (q *Queue[T]) acceptAcked(v T) (*ackGroup, int, error) {
	if !q.intake.enter() {
		return nil, 0, ErrClosed
	}
	defer q.intake.leave()
	if q.itemLimit != 0 {
		if err := q.CheckItem(v); err != nil {
			return nil, 0, err
		}
	}
	// Charged now: the item waits in the inbox, outside any ring. Not
	// spillable: ack batches are not spilled.
	size := int64(q.sizeOf(v))
	if err := q.admit(1, size, false); err != nil {
		return nil, 0, err
	}
	sp, err := q.tier.acceptAck(v)
	if err != nil {
		q.unadmit(size)
		return nil, 0, err
	}
	g, idx := q.acks.inbox.add(v, sp)
	q.acks.accepted.Add(1)
	// One wake per batch's worth (see acks.uncut): a partial batch waits
	// for the tick, as ring items do.
	if q.acks.uncut.Add(1)%q.batchSize.Load() == 0 {
		q.wakeCollector()
	}
	return g, idx, nil
}

// acceptAck for the ring tiers: nothing to do at the call (the periodic
// tier writes the ack batch if a checkpoint finds it undelivered, as it
// does every batch).
func (ringIntake[T]) acceptAck(T) (span, error) { return span{}, nil }

// acceptAck for the sync tier: v is appended and fsynced (the log syncs
// every append itself) before it enters the inbox, as EnqueueKey's items
// are.
func (t syncTier[T]) acceptAck(v T) (span, error) { return t.appendOne(v, nil) }

// takeAcks moves what the ack inbox holds into the ack batch, cutting it
// each time it holds BatchSize items, and with partial also what is left
// (the interval tick, checkpoints, Flush, Stop). Each batch that receives
// items of the group taken lists it and holds a reference to it; the
// collector's own reference is dropped once the group's items are all in
// batches. Their bytes were charged at admission: carried, not charged.
func (c *collector[T]) takeAcks(partial bool) {
	q := c.q
	// The count is never above what the inbox and the ack batch hold (a
	// caller counts its item after adding it), so while it says a full
	// batch is there, a take finds items.
	for c.takeAckInbox() && q.acks.uncut.Load() >= q.batchSize.Load() {
	}
	a := &c.ack
	if partial && a.acked != nil && len(a.acked.items) > 0 {
		c.cutAcked()
	}
}

// cutAcked hands on the ack batch.
func (c *collector[T]) cutAcked() {
	b := c.ack.acked
	c.ack.acked = nil
	c.q.acks.uncut.Add(-int64(len(b.items)))
	c.push(b)
}

// takeAckInbox is one take of the ack inbox for takeAcks; it reports
// whether it took anything.
func (c *collector[T]) takeAckInbox() bool {
	q := c.q
	a := &c.ack
	items, spans, g := q.acks.inbox.take(a.items[:0], a.spans[:0])
	// Each batch receiving the group's items gets a share, its end
	// holding for now what the batch held before. None of these batches
	// is with a sender yet (the collector hands them over later), so once
	// all are placed, what each holds beyond that is its share.
	c.fill(&a.acked, items, spans, func(b *pending[T]) {
		if k := len(b.acks); k == 0 || b.acks[k-1] != g {
			g.refs.Add(1)
			b.acks = append(b.acks, g)
			g.shares = append(g.shares, ackShare{batch: b, end: len(b.items)})
		}
	}, c.cutAcked)
	if g != nil {
		placed := 0
		for i := range g.shares {
			s := &g.shares[i]
			placed += len(s.batch.(*pending[T]).items) - s.end
			s.end = placed
		}
	}
	if b := a.acked; b != nil && len(b.items) >= int(q.batchSize.Load()) {
		c.cutAcked() // size shrank (adaptive sizing)
	}
	if g != nil {
		g.release()
	}
	clear(items) // retention rule
	a.items, a.spans = items[:0], spans[:0]
	return g != nil
}

// settleAcks tells the groups whose items b holds how b ended (nil:
// delivered); finish calls it before b is recycled.
func settleAcks[T any](b *pending[T], outcome error) {
	for i, g := range b.acks {
		g.settle(b, outcome)
		b.acks[i] = nil
	}
	b.acks = b.acks[:0]
}

// The outcomes finish reports to EnqueueAck callers, for batches that were
// not delivered. reason is the cause the queue logs and gives OnDrop.
func outcomeDropped(reason error) error {
	return fmt.Errorf("%w: %w", ErrDropped, reason)
}

// outcomeLeftAtStop: Stop ran out of time before the batch was delivered,
// and it stays in the WAL for the next New.
func outcomeLeftAtStop(reason error) error {
	if errors.Is(reason, ErrClosed) {
		return fmt.Errorf("vinequeue: not delivered before Stop; kept in the WAL: %w", reason)
	}
	return fmt.Errorf("%w: not delivered before Stop; kept in the WAL: %w", ErrClosed, reason)
}

// outcomeLeftFailed: the batch failed for good but its dead letter could
// not be written; it stays in the WAL, unacknowledged, for the next New.
func outcomeLeftFailed(reason error) error {
	return fmt.Errorf("vinequeue: not delivered, and the dead-letter log could not take it; kept in the WAL for the next New: %w", reason)
}
