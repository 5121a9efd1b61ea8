package engine

import (
	"fmt"
	"time"

	"github.com/vineroute/vinequeue/governor"
)

// Admission. Every intake call (Enqueue past its fast path, EnqueueBatch,
// EnqueueKey; Sync mode's group commit too) passes one step, admit, before
// its items enter the queue: it charges the governor with what the items
// weigh, then acts on the level: Normal, go on; Soft, wait the governor's
// short delay, then go on; Hard, the Policy. Reject refuses (ErrFull,
// counted in Stats.Rejected); Block waits until the level is back to Normal
// or Stop (ErrClosed); Spill goes on, the collector writing to the WAL what
// memory cannot hold, unless a spill has failed since the level reached
// Hard, and then the call is refused with an error matching ErrWALFull
// until the level leaves Hard: never growth.
//
// Enqueue's fast path (a push into the P's ring that neither fills it nor
// reaches its watermark) passes no admission and charges nothing per item.
// A ring's slots are charged whole, when the ring is made; its items are
// charged by the collector as it drains them into batches. Ring intake is
// bounded by the rings themselves instead: at Hard, unless spilling, no
// ring is handed off and the collector leaves full rings full (holdRings),
// so producers find their ring full, take the slow path and meet the Policy.
//
// # The memory bound
//
// The governor weighs the rings' slots plus every item outside a ring: in a
// batch, a keyed shard or a Sync commit group. Charges made by admit are
// made before the level is read, so an accepted call never takes the level
// to Hard. With P Ps and R rings (R ≤ RingsPerP × P, each RingSize slots;
// New refuses a Limit below which P+1 rings do not fit), what the governor
// holds stays below
//
//	Hard + R × RingSize items + one item per concurrent admitted call
//	     + one batch each from the replay, the spill read-back and the
//	       release of parked keys
//
// R × RingSize items: the collector charges ring items as it drains them.
// At Hard it still drains the rings handed off before (none is handed off
// there, so that backlog cannot grow) but leaves the Ps' current rings full;
// it reads the level between rings, so it may drain one of those past Hard
// (one per collector when there are several central shards; still within
// R × RingSize). Under Spill the rings go on flowing at Hard because each
// batch cut from them leaves memory as it is cut; a spill that fails keeps
// its batch, and stops the rings (holdRings) for the rest of the level's
// stretch, however the spills after it fare (spill.go), so what failed
// spills keep is within the rings handed off before: R × RingSize again.
// One batch each: the replayer and the releaser of parked keys hand the
// collector one batch at a time, charged as it takes it, at any level; the
// unspiller hands over one at a time too, charged as it does, and only at
// Normal.
// One item per call (a keyed chunk, see below): calls charging
// concurrently below Hard may together take the level past it, though none
// does alone. Under Block, an item so
// large that it alone takes the queue from Normal to Hard is admitted once
// the level is Normal, since waiting cannot make room for it: that item is
// then the overshoot.
//
// EnqueueKey (unless the tier writes keyed items first: sync) admits in
// chunks rather than per item: a keyed shard holds credit, memory admitted
// and not yet used by an item, and a call takes what its item weighs from
// it, passing admit only when the shard runs short, for max(chunk, what is
// missing). The chunk is at most Hard/2048 (keyedChunkMax at most), and a
// shard's credit is below it after every call, so the credit of all 64
// shards is below Hard/32. Credit is charged to the governor like items, so
// the bound above holds with a chunk in place of an item per concurrent
// call; the slack is the other way: Reject and Block act while up to 64
// chunks of what the governor holds are credit, not items, and a call
// spending credit meets no Policy and no soft-level delay (as Enqueue's
// fast path does not), though it is refused with the WAL full or after
// Stop. Credit is given back at the hard level (with the rings), by a
// shard that accepted nothing over a tick, and at Stop; Stats.BytesHeld
// leaves it out. With a small limit the chunk is below one item, and
// every call is admitted on its own, as Enqueue's slow path is.
//
// A keyed item waits in its shard's ring slot (keyed.go), which holds the
// item, its key and its size: what SizeOf counts and 24 bytes more, not
// charged. A shard's empty rings (the current one's unused slots, the
// spares a busy shard keeps: those it absorbed, and up to keyedSparesMax
// the collector made for it) are not charged either: at most 32 KiB per
// ring; an idle shard keeps only its current ring.
//
// Items sitting in rings are charged for their slots only: what SizeOf
// counts beyond a slot (the bytes behind a []byte or string) is charged when
// they are drained, so until then the process holds up to R × RingSize
// items' worth of those bytes more than the governor sees. Stats.BytesHeld
// reports the items outside rings, without the slots.

// admit is the admission step. n is the number of items the call brings
// (counted in Stats.Rejected when refused); bytes is what they weigh: their
// SizeOf total for intake that holds items outside a ring (a keyed shard, a
// Sync commit group), 0 for ring intake, which the collector charges as it
// drains. spillable says whether the collector can write these items to the
// WAL at Hard under Policy Spill: ring and Sync items can; keyed items
// cannot (their key's order would have to survive the round trip), so under
// Spill they wait at Hard as under Block.
//
// On nil the bytes are charged (to the governor and Stats.BytesHeld): a
// caller that then fails to take the items after all undoes it with
// unadmit. On an error nothing is charged. Unpinned only: it may sleep.
func (q *Queue[T]) admit(n int, bytes int64, spillable bool) error {
	for {
		if q.closing.Load() {
			return ErrClosed
		}
		if p := q.walFull.Load(); p != nil {
			// The periodic tier could not write its last batch: items
			// accepted now could not be on disk within SyncInterval.
			q.rejected.Add(uint64(n))
			return q.refusedFull(*p)
		}
		lvl := q.gov.Level()
		if bytes != 0 {
			lvl = q.gov.Add(bytes)
		}
		if lvl == governor.LevelHard {
			err, wait := q.atHard(n, bytes, spillable)
			if err != nil || wait {
				q.shedRings() // memory can fall by the rings nobody uses
				// and by the keyed credit nobody has used yet
				q.keyed.shedCredit(q, false)
			}
			if err != nil {
				return err
			}
			if wait {
				q.blocked.Add(1)
				if q.gov.WaitBelowSoft(q.closedCtx) != nil {
					return ErrClosed
				}
				continue
			}
		}
		if bytes != 0 {
			q.bytesHeld.Add(bytes)
		}
		if lvl == governor.LevelSoft {
			q.pressureDelay()
		}
		return nil
	}
}

// atHard applies the Policy for admit at the hard level, bytes having been
// charged. It returns the error refusing the call, or wait (wait for Normal
// and try again), with the charge undone; or neither: the call goes on, with
// its charge.
func (q *Queue[T]) atHard(n int, bytes int64, spillable bool) (err error, wait bool) {
	if s := q.spill; s != nil {
		err = s.failure()
		if spillable && err == nil {
			return nil, false // the collector spills
		}
	}
	after := q.gov.Level()
	if bytes != 0 {
		after = q.gov.Add(-bytes)
	}
	if q.cfg.Memory.Policy == Reject {
		err = ErrFull
	}
	if err != nil {
		q.rejected.Add(uint64(n))
		return q.refusedFull(err), false
	}
	if bytes != 0 && after == governor.LevelNormal {
		// This call alone takes the level from Normal to Hard: waiting for
		// Normal cannot make room for it. Take it (see the memory bound).
		q.gov.Add(bytes)
		return nil, false
	}
	return nil, true
}

// unadmit undoes the charge of an admitted call whose items were refused
// after all (Stop began, the WAL refused them).
func (q *Queue[T]) unadmit(bytes int64) {
	if bytes != 0 {
		q.hold(-bytes)
	}
}

// holdRings reports whether full rings stay where they are: the tier's WAL
// is full (walFull), or memory is at Hard and the queue has nowhere to put
// what they hold (no spiller, or spilling fails). Producers then keep their
// full ring and meet the Policy; the collector stops draining. It runs
// pinned (handOff): loads only.
func (q *Queue[T]) holdRings() bool {
	if q.walFull.Load() != nil {
		return true // the tier cannot write: accept nothing more (admit)
	}
	if q.gov.Level() != governor.LevelHard {
		return false
	}
	s := q.spill
	return s == nil || s.failing()
}

// pressureDelay slows a producer on the slow path while memory is at the
// soft level or above (the governor's delay grows with pressure).
func (q *Queue[T]) pressureDelay() {
	if d := q.gov.Delay(); d > 0 {
		q.delayed.Add(1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-q.closedCtx.Done():
		}
		t.Stop()
	}
}

// checkRingBudget refuses a limit too small for the rings intake needs to
// flow: the Ps' own rings (one each, made in New and kept for the queue's
// life) and one more, in hand-off, must fit below Hard, or every hand-off
// takes the level there; and under Block below the level it waits for
// (Soft less the governor's hysteresis), or it waits for ever.
func (q *Queue[T]) checkRingBudget(procs int) error {
	st := q.gov.Stats()
	rings := int64(procs+1) * q.ringBytes
	what := fmt.Sprintf("%d B is too small for one ring per P and one in hand-off ((%d+1) × RingSize %d × %d B = %d B)",
		st.Limit, procs, q.cfg.RingSize, q.ringBytes/int64(q.cfg.RingSize), rings)
	if rings >= st.Hard {
		return invalid("Memory.Limit", "%s: they alone reach Hard (%d B)", what, st.Hard)
	}
	exit := int64(float64(st.Limit) * (q.cfg.Memory.Soft - governor.DefaultHysteresis))
	if q.cfg.Memory.Policy == Block && rings >= exit {
		return invalid("Memory.Limit", "%s: Block waits for memory to fall below %d B", what, exit)
	}
	return nil
}
