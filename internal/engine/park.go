package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vineroute/vinequeue/wal"
)

// Parking keys (Config.ParkKeys; it needs a WAL). When a keyed batch is
// dead-lettered, its dead letters name the key of each item (wal.DeadMeta
// Keys), and the later items of those keys are parked: a sender about to
// send a keyed batch first moves the items of parked keys into dead letters
// of their own (marked Parked, one per key and batch), acknowledges them in
// the main log, and sends the rest. Every other key flows. A key is parked
// for as long as a dead letter holding it exists; shards stay FIFO, so a
// key's parked dead letters are written in its order.
//
// Releasing. RequeueDeadLetters of a keyed dead letter and PurgeDeadLetters
// release the keys of the dead letters they name: the releaser goroutine
// delivers, one batch at a time and in id order, the dead letters holding
// released keys (the requeued ones and the parked ones) straight from the
// dead-letter log, purging each only once its Send returned nil, so a
// crash meanwhile leaves it where it was. Id order is each key's order: a
// key's failed dead letter is written before the key parks, its parked
// ones after, in the order its batches go out. A key unparks when its last
// dead letter is gone; its items then flow from its shard as before. A
// failed dead letter that was not requeued blocks its keys: the releaser
// does not pass it. A released dead letter that fails again stays as it
// is, blocks its keys, and goes to OnDrop like any failed batch.
//
// Restart. New reads the dead letters: every key with one parks again, and
// the keys whose oldest dead letter is a parked one (its failed one was
// requeued or purged by vinewal while the queue was stopped) are released
// once the replay is over, so that, per key, the items a vinewal requeue
// put in the main log go first.
//
// Memory. Parked items are on disk only, in the dead-letter log (which
// shares WAL.MaxBytes with the segments); a parked key holds no memory, and
// the releaser holds one dead letter's items at a time. If a parked item
// cannot be written (the WAL is full), it is handled as a dead letter that
// cannot be written: left unacknowledged in the main log when it is there
// (the next New replays it with its key, and parks it then if its key is
// still parked: replay.go), its key's later items held there behind it
// (parkwait.go), otherwise handed to OnDrop. A failed batch
// whose own dead letter the WAL has no room for waits for room, its keys'
// later items behind it (parkwait.go).
//
// Lock order: parking.recording, then parking.mu, then the log's locks.
// divert writes dead letters without mu, holding reservations of their keys
// instead (divert).

// parkLetter is a live dead letter that holds keys.
type parkLetter struct {
	keys    []uint64 // distinct
	items   int
	parked  bool // on disk: parked behind its keys, not failed itself
	named   bool // requeued by id: delivered although it failed
	blocked bool // released, and failed again: blocks its keys until requeued
	damaged bool // does not read: holds the keys parked after it until purged
}

func (l *parkLetter) holdsAny(keys map[uint64]struct{}) bool {
	for _, k := range l.keys {
		if _, ok := keys[k]; ok {
			return true
		}
	}
	return false
}

// parking is a queue's parked keys and their dead letters.
type parking[T any] struct {
	q    *Queue[T]
	out  chan *pending[T] // releaser → collector
	ack  chan struct{}    // cap 1: the released batch is finished
	kick chan struct{}    // cap 1: there may be something to release

	// recording keeps the log's keyed dead letters and letters in step
	// for those who read the one and act on the other. It is held shared
	// by a writer of keyed dead letters from before the log takes them
	// until they are recorded in letters, and by the purge of a released
	// letter delivered until it is forgotten; exclusively by
	// RequeueDeadLetters and PurgeDeadLetters while they read the log's
	// dead letters and act on what letters says of them. Otherwise a keyed
	// letter listed between its write and its recording looked unkeyed,
	// and was requeued through the main log (its items delivered ahead of
	// their keys' earlier ones) or purged, and then recorded: a letter no
	// longer on disk, holding its keys parked for good; and one listed as
	// its release purged it was requeued as unkeyed too (ErrNoDeadLetter
	// from a call that named none). Taken before mu.
	recording sync.RWMutex

	mu      sync.Mutex
	letters map[uint64]*parkLetter // live dead letters holding keys, by id
	keys    map[uint64]int         // parked keys: how many live dead letters hold each
	release map[uint64]struct{}    // keys being released
	writing map[uint64]parkWriter  // keys a divert reserved (divert)
	// asked counts release requests; done is the last one the releaser
	// has finished (nothing left to deliver); idle is closed and replaced
	// whenever done moves (Flush waits on it).
	asked, done uint64
	idle        chan struct{}

	// Failed keyed batches whose dead letter the WAL had no room for
	// (parkwait.go): waiting, oldest first, for room; stopping, once Stop
	// began (they wait no longer); behind, the keys of those left in the
	// main log, whose later items are left there too.
	waiting  []waitingFailure[T]
	stopping bool
	behind   map[uint64]struct{}
	// waitLoop's own: the finished batches it saw last, and how many
	// retries in a row saw no sender busy and none finished (stalled).
	lastFinished uint64
	idleRetries  int
	waitKick     chan struct{} // cap 1: a batch began to wait

	// Read without mu: the data path's check and Stats.
	nkeys   atomic.Int64 // len(keys)
	items   atomic.Int64 // items in parked dead letters
	nbehind atomic.Int64 // len(behind)
}

// newParking reads the dead letters New found and parks their keys; the
// keys whose oldest dead letter is a parked one are released once the
// replay is over (releaseLoop).
func newParking[T any](q *Queue[T]) (*parking[T], error) {
	p := &parking[T]{
		q:       q,
		out:     make(chan *pending[T]),
		ack:     make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		letters: make(map[uint64]*parkLetter),
		keys:    make(map[uint64]int),
		release: make(map[uint64]struct{}),
		writing: make(map[uint64]parkWriter),
		idle:    make(chan struct{}),
		behind:  make(map[uint64]struct{}),

		waitKick: make(chan struct{}, 1),
	}
	ds, err := q.wal.log.DeadLetters()
	if err != nil {
		return nil, walErr(err)
	}
	for _, d := range ds {
		if d.Damage == nil && len(d.Keys) > 0 {
			p.addLetterLocked(d.ID, d.Keys, d.Parked, d.Items)
		}
	}
	// A damaged dead letter cannot tell its keys: it may be the failed
	// letter of any key parked after it. It holds those keys as a failed
	// letter not requeued does, so they are not released as if an operator
	// had acted; purging it releases them (requeuing it cannot: it does not
	// read).
	for _, d := range ds {
		if d.Damage == nil {
			continue
		}
		var keys []uint64
		for id, l := range p.letters {
			if id > d.ID && l.parked {
				keys = append(keys, l.keys...)
			}
		}
		if len(keys) > 0 {
			p.addLetterLocked(d.ID, keys, false, 0)
			p.letters[d.ID].damaged = true
			q.logger.Error("vinequeue: a damaged dead letter may be the failed one of keys parked after it: they stay parked until it is purged", "id", d.ID, "keys", len(p.letters[d.ID].keys), "damage", d.Damage)
		}
	}
	if len(p.keys) > 0 {
		for k := range p.keys {
			p.release[k] = struct{}{}
		}
		p.asked = 1
		p.kick <- struct{}{}
	}
	return p, nil
}

// releaseCh is the releaser's channel to the collector (nil without
// parking: a nil channel is never ready).
func (q *Queue[T]) releaseCh() chan *pending[T] {
	if q.park == nil {
		return nil
	}
	return q.park.out
}

// addLetter records dead letter id, written with keys (one per item, n
// items): its keys park.
func (p *parking[T]) addLetter(id uint64, keys []uint64, n int) {
	p.mu.Lock()
	p.addLetterLocked(id, keys, false, n)
	p.mu.Unlock()
}

func (p *parking[T]) addLetterLocked(id uint64, keys []uint64, parked bool, n int) {
	distinct := slices.Compact(slices.Sorted(slices.Values(keys)))
	p.letters[id] = &parkLetter{keys: distinct, items: n, parked: parked}
	for _, k := range distinct {
		p.keys[k]++
	}
	p.nkeys.Store(int64(len(p.keys)))
	if parked {
		p.items.Add(int64(n))
	}
}

// removeLetterLocked forgets dead letter id (delivered or purged): a key
// none holds any more unparks.
func (p *parking[T]) removeLetterLocked(id uint64) {
	l, ok := p.letters[id]
	if !ok {
		return
	}
	delete(p.letters, id)
	for _, k := range l.keys {
		if p.keys[k]--; p.keys[k] <= 0 {
			delete(p.keys, k)
		}
	}
	p.nkeys.Store(int64(len(p.keys)))
	if l.parked {
		p.items.Add(-int64(l.items))
	}
}

// ask records a release request (caller holds mu) and wakes the releaser.
func (p *parking[T]) askLocked() {
	p.asked++
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// divert parks the items of b whose key is parked, before b is sent:
// written as parked dead letters (one per key), acknowledged in the main
// log, and removed from b. It reports whether b is left empty. Sender
// goroutine.
//
// mu guards the maps only: the dead letters are written (several fsyncs)
// without it, so a parked key does not hold up the senders of every other
// key. Two things the lock held through the write gave are kept by
// reservations taken under mu with the check:
//   - a key cannot unpark meanwhile: divert holds its keys (p.keys counts
//     the reservation as a dead letter) until their letters are recorded;
//     if every older letter of a key went meanwhile (released), the new
//     ones are released too, as the pass that delivered the older ones
//     would have done;
//   - a key's dead letters keep its order: a divert waits, before writing,
//     for the earlier divert that reserved the same key (p.writing), so
//     ids follow the order in which the keys were checked.
func (p *parking[T]) divert(b *pending[T]) (empty bool) {
	if p.nkeys.Load() == 0 {
		return false
	}
	q := p.q
	p.mu.Lock()
	// The keys of b that are parked, in the order they first appear.
	var parkedKeys []uint64
	for _, k := range b.keys {
		if p.keys[k] > 0 && !slices.Contains(parkedKeys, k) {
			parkedKeys = append(parkedKeys, k)
		}
	}
	if len(parkedKeys) == 0 {
		p.mu.Unlock()
		return false
	}
	done := make(chan struct{}) // closed when this divert's letters are recorded
	var before []chan struct{}  // earlier diverts writing any of these keys
	for _, k := range parkedKeys {
		if w, ok := p.writing[k]; ok && !slices.Contains(before, w.done) {
			before = append(before, w.done)
		}
		p.writing[k] = parkWriter{done: done, n: p.writing[k].n + 1}
		p.keys[k]++ // the reservation: k stays parked until released below
	}
	p.mu.Unlock()
	for _, c := range before {
		<-c // each closes without waiting on a later divert: no cycle
	}
	pos := itemPositions(b.spans, len(b.items))
	var acks pending[T] // the main-log positions of what was parked
	var removedBytes int64
	keep := make([]bool, len(b.items))
	for i, k := range b.keys {
		keep[i] = !slices.Contains(parkedKeys, k)
	}
	var written []uint64 // ids of the letters written
	for _, k := range parkedKeys {
		var items []T
		var at []int
		for i, ik := range b.keys {
			if ik == k {
				items = append(items, b.items[i])
				at = append(at, i)
			}
		}
		keys := make([]uint64, len(items))
		for i := range keys {
			keys[i] = k
		}
		var where []span
		for _, i := range at {
			if pos != nil {
				where = appendSpan(where, pos[i].id, pos[i].off, 1)
			}
		}
		meta := wal.DeadMeta{Reason: "parked: an earlier item of its key is a dead letter", Records: recordIDs(where), Parked: true}
		n, err := q.wal.writeDeadLetter(items, keys, meta, func(id uint64, keys []uint64, n int) {
			p.mu.Lock()
			p.addLetterLocked(id, keys, true, n)
			p.mu.Unlock()
			written = append(written, id)
		})
		for _, i := range at[:n] {
			if pos != nil && pos[i].id != 0 {
				acks.spans = appendSpan(acks.spans, pos[i].id, pos[i].off, 1)
			}
		}
		q.parked.Add(uint64(n))
		if err != nil {
			p.notParked(k, items[n:], at[n:], pos, err)
		}
		removedBytes += q.bytesOf(items)
	}
	p.unreserve(parkedKeys, written, done)
	q.tier.acknowledge(&acks)
	return q.keepOnly(b, keep, pos, removedBytes)
}

// keepOnly keeps in b the items keep marks, in order, with their positions
// (pos: itemPositions of b's spans), the others having left it with
// removedBytes; it reports whether b is left empty.
func (q *Queue[T]) keepOnly(b *pending[T], keep []bool, pos []span, removedBytes int64) (empty bool) {
	j := 0
	spans := b.spans[:0:0]
	for i := range b.items {
		if !keep[i] {
			continue
		}
		b.items[j], b.keys[j] = b.items[i], b.keys[i]
		if pos != nil {
			spans = appendSpan(spans, pos[i].id, pos[i].off, 1)
		}
		j++
	}
	clear(b.items[j:]) // retention rule
	b.items, b.keys = b.items[:j], b.keys[:j]
	if pos != nil {
		b.spans = append(b.spans[:0], spans...)
	}
	b.bytes -= removedBytes
	q.hold(-removedBytes)
	return j == 0
}

// parkWriter is the last divert that reserved a key: later ones wait for
// done before writing; n counts the reservations of the key still held.
type parkWriter struct {
	done chan struct{}
	n    int
}

// unreserve drops divert's reservations of keys, its letters (ids) being
// recorded. A key whose only holders now are those letters lost its older
// ones meanwhile (released and delivered): the new letters are released
// too, so they do not stay parked with no release to come.
func (p *parking[T]) unreserve(keys, ids []uint64, done chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ask := false
	for _, k := range keys {
		mine := 0
		for _, id := range ids {
			if l, ok := p.letters[id]; ok && slices.Contains(l.keys, k) {
				mine++
			}
		}
		w := p.writing[k]
		// Holders of k besides this divert's letters and the reservations.
		if others := p.keys[k] - mine - w.n; others == 0 && mine > 0 {
			p.release[k] = struct{}{}
			ask = true
		}
		if w.n--; w.n == 0 {
			delete(p.writing, k)
		} else {
			p.writing[k] = w
		}
		if p.keys[k]--; p.keys[k] <= 0 {
			delete(p.keys, k)
		}
	}
	p.nkeys.Store(int64(len(p.keys)))
	close(done)
	if ask {
		p.askLocked()
	}
}

// notParked handles items of a parked key that could not be written to the
// dead-letter log (at are their indexes in the batch, pos its positions in
// the main log): as a dead letter that cannot be written, those in the main
// log stay there unacknowledged (the next New replays them), the others go
// to OnDrop. Key k is then held behind those left in the main log
// (parkwait.go): its later items, parked once room freed, would be released
// ahead of them, and the next New would park them behind those.
func (p *parking[T]) notParked(k uint64, items []T, at []int, pos []span, err error) {
	q := p.q
	q.logger.Error("vinequeue: items of a parked key could not be parked", "items", len(items), "err", err)
	var dropped []T
	left := false
	for j, i := range at {
		if pos != nil && pos[i].id != 0 {
			q.leftOnDisk.Add(1)
			left = true
			continue
		}
		dropped = append(dropped, items[j])
	}
	if left {
		p.mu.Lock()
		p.holdBehindLocked([]uint64{k})
		p.mu.Unlock()
	}
	if len(dropped) == 0 {
		return
	}
	reason := fmt.Errorf("vinequeue: parking failed: %w", err)
	if q.cfg.OnDrop != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					q.logger.Error("vinequeue: OnDrop panicked", "panic", r)
				}
			}()
			q.cfg.OnDrop(dropped, reason)
		}()
	}
	q.dropped.Add(uint64(len(dropped)))
}

// itemPositions expands spans into one span per item (nil when spans is
// empty: the items are not on disk). Items not on disk get id 0.
func itemPositions(spans []span, n int) []span {
	if len(spans) == 0 {
		return nil
	}
	pos := make([]span, 0, n)
	for _, s := range spans {
		for i := range s.n {
			pos = append(pos, span{id: s.id, off: s.off + i, n: 1})
		}
	}
	for len(pos) < n { // spans name every item; be safe if they do not
		pos = append(pos, span{n: 1})
	}
	return pos
}

// releaseLoop is the releaser goroutine: it delivers released dead letters
// one at a time, each once the previous one is finished.
func (p *parking[T]) releaseLoop() {
	q := p.q
	// Per key, what the replay delivers goes first.
	select {
	case <-q.replayDone:
	case <-q.closedCtx.Done():
		return
	}
	for q.closedCtx.Err() == nil {
		id, ok := p.next()
		if !ok {
			select {
			case <-p.kick:
			case <-q.closedCtx.Done():
			}
			continue
		}
		b, err := p.read(id)
		if err != nil {
			q.logger.Error("vinequeue: a released dead letter cannot be read; its keys stay parked", "id", id, "err", err)
			p.block(id)
			continue
		}
		if len(b.items) == 0 {
			q.putBatch(b)
			p.purge(id)
			continue
		}
		n := uint64(len(b.items))
		// Counted before the hand-over, as accepted again: once the
		// collector has it, it may be delivered (and counted) at once.
		q.released.Add(n)
		select {
		case p.out <- b:
		case <-q.closedCtx.Done():
			q.released.Add(-n)
			q.putBatch(b)
			return
		}
		select {
		case <-p.ack:
		case <-q.sendCtx.Done():
			return
		}
	}
}

// next picks the dead letter to release next: the oldest that holds a key
// being released, unless it failed and was not requeued (then its keys
// stay parked). With none left, the release requests so far are done.
func (p *parking[T]) next() (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.release) > 0 {
		var id uint64
		var l *parkLetter
		for lid, pl := range p.letters {
			if (l == nil || lid < id) && pl.holdsAny(p.release) {
				id, l = lid, pl
			}
		}
		if l == nil {
			break
		}
		if l.blocked || (!l.parked && !l.named) {
			for _, k := range l.keys {
				delete(p.release, k)
			}
			continue
		}
		// Its other keys go with it: it is their oldest dead letter too
		// (a failed one is written before its keys park).
		for _, k := range l.keys {
			p.release[k] = struct{}{}
		}
		return id, true
	}
	clear(p.release)
	if p.done != p.asked {
		p.done = p.asked
		close(p.idle)
		p.idle = make(chan struct{})
	}
	return 0, false
}

// read makes a batch of dead letter id's items.
func (p *parking[T]) read(id uint64) (*pending[T], error) {
	q := p.q
	_, payload, err := q.wal.log.ReadDeadLetter(id)
	if err != nil {
		return nil, walErr(err)
	}
	b := q.getBatch()
	if b.items, err = q.wal.decode(b.items[:0], payload); err != nil {
		q.putBatch(b)
		return nil, fmt.Errorf("vinequeue: dead letter does not decode: %w", err)
	}
	b.letter = id
	b.bytes = q.bytesOf(b.items)
	return b, nil
}

// block stops releasing dead letter id's keys: it failed again, or cannot
// be read.
func (p *parking[T]) block(id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.letters[id]; ok {
		l.blocked, l.named = true, false
		for _, k := range l.keys {
			delete(p.release, k)
		}
	}
}

// purge deletes dead letter id, delivered again, and forgets it. A purge
// that fails leaves it on disk: the next New delivers it again (a
// duplicate, never a loss).
func (p *parking[T]) purge(id uint64) {
	q := p.q
	p.recording.RLock() // purged and forgotten as one step (recording)
	defer p.recording.RUnlock()
	if _, err := q.wal.log.PurgeDeadLetters(id); err != nil && !errors.Is(err, wal.ErrNotFound) {
		q.logger.Error("vinequeue: a dead letter delivered again could not be purged; the next New delivers it again", "id", id, "err", walErr(err))
	}
	p.mu.Lock()
	p.removeLetterLocked(id)
	p.mu.Unlock()
}

// delivered: the released batch b was delivered. Sender goroutine, before
// b is finished (the releaser then moves on).
func (p *parking[T]) delivered(b *pending[T]) { p.purge(b.letter) }

// failedAgain: the released batch b failed for good; its dead letter stays
// and blocks its keys.
func (p *parking[T]) failedAgain(b *pending[T]) { p.block(b.letter) }

// requeue releases the keyed dead letters among ids (all of them when ids
// is empty) and returns how many; rest are the ids it does not hold
// (unkeyed dead letters, or none at all), for the caller's unkeyed requeue:
// with ids empty, every unkeyed dead letter.
func (p *parking[T]) requeue(ids []uint64) (n int, rest []uint64, err error) {
	// No keyed letter is between its write and its recording meanwhile:
	// one this does not hold is unkeyed (recording).
	p.recording.Lock()
	defer p.recording.Unlock()
	if len(ids) == 0 {
		ds, err := p.q.wal.log.DeadLetters()
		if err != nil {
			return 0, nil, walErr(err)
		}
		for _, d := range ds {
			if d.Damage == nil {
				ids = append(ids, d.ID)
			}
		}
		if len(ids) == 0 {
			return 0, nil, nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		l, ok := p.letters[id]
		if !ok || l.damaged {
			rest = append(rest, id) // a damaged one: the log's requeue reports it
			continue
		}
		l.named, l.blocked = true, false
		for _, k := range l.keys {
			p.release[k] = struct{}{}
		}
		n++
	}
	if n > 0 {
		p.askLocked()
	}
	return n, rest, nil
}

// purged forgets the dead letters ids, purged, and releases their keys.
func (p *parking[T]) purged(ids []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, id := range ids {
		l, ok := p.letters[id]
		if !ok {
			continue
		}
		for _, k := range l.keys {
			p.release[k] = struct{}{}
		}
		p.removeLetterLocked(id)
		n++
	}
	if n > 0 {
		p.askLocked()
	}
}

// issued is the number of release requests so far (Flush waits for them).
func (p *parking[T]) issued() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked
}

// waitReleased returns once the release requests up to asked are done:
// their dead letters delivered, or stopped at one that blocks.
func (p *parking[T]) waitReleased(ctx context.Context, asked uint64) error {
	for {
		p.mu.Lock()
		done, idle := p.done, p.idle
		p.mu.Unlock()
		if done >= asked {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.q.stopDone:
			return ErrClosed
		}
	}
}
