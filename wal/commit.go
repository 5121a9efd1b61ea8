package wal

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// committer is the Log's one group commit. Every durability wait goes
// through it: AppendItems callers, whose items it frames into shared
// records, and Append/Sync callers, whose records are written already. Each
// round it writes the groups that filled while it was busy, runs one
// fdatasync for everything written so far, and wakes everyone it covered.
// While it syncs, the next groups fill, so a thousand concurrent callers
// cost about one record and one fdatasync per round.
//
// A group is bounded by bytes before an append joins it: an append that
// would push the open group past Options.GroupBytes seals the group and
// starts the next one, so a group never grows past one record, and an
// append larger than MaxRecord is refused at its call, alone.
type committer struct {
	l *Log

	mu        sync.Mutex
	closed    bool
	cur       *itemGroup    // the open group; items are framed into cur.buf
	curKey    *itemGroup    // the open group of keyed items (a keyed record)
	sealed    []*itemGroup  // full groups waiting, in order
	waiters   []*syncWait   // durability waits for records already written
	free      [][]byte      // payload buffers to reuse
	freeKey   [][]uint64    // keyed groups' key buffers to reuse
	freeCalls [][]groupCall // keyed groups' call lists to reuse
	kick      chan struct{}
	stop      chan struct{}
	exited    chan struct{}

	// calls counts the appends in the groups not yet taken (sealed, cur
	// and curKey), and syncWaits the waits not yet taken; written under
	// mu, read by gather without it.
	calls, syncWaits atomic.Int64
}

// itemGroup is one future record. Its appenders wait on done and then read
// id and err, which the committer sets before closing done.
type itemGroup struct {
	buf  []byte
	keys []uint64 // a keyed group's: one per item (nil: an unkeyed group)
	n    int
	// calls are a keyed group's calls, in arrival order, when the log
	// orders keyed records (Options.KeyGroup); the committer reuses them
	// once the group is written. firsts, set by the committer before it
	// closes done if it moved the calls, is where each one's items start
	// now: four bytes a call, so that the woken callers, each reading its
	// own, share the cache lines the committer wrote sixteen at a time.
	calls  []groupCall
	firsts []int32
	id     uint64
	err    error
	done   chan struct{}
}

// groupCall is one call's items in a keyed group: items [first,
// first+n), framed in buf[start:end].
type groupCall struct {
	start, end int   // a group's bytes are bounded by MaxRecord, which may pass 2 GiB
	first, n   int32 // a group's items are bounded by maxStoredItems
	group      uint8 // KeyGroup of its first key
}

// syncWait is a wait for every id <= target to be durable.
type syncWait struct {
	target uint64
	err    error
	done   chan struct{}
}

func (c *committer) init(l *Log) {
	c.l = l
	c.kick = make(chan struct{}, 1)
	c.stop = make(chan struct{})
	c.exited = make(chan struct{})
	c.cur = c.newGroupLocked()
	c.curKey = c.newGroupLocked()
}

func (c *committer) newGroupLocked() *itemGroup {
	var buf []byte
	if n := len(c.free); n > 0 {
		buf, c.free = c.free[n-1][:0], c.free[:n-1]
	}
	return &itemGroup{buf: buf, done: make(chan struct{})}
}

func (c *committer) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// AppendItem is AppendItems for one item.
func (l *Log) AppendItem(item []byte) (uint64, error) {
	return l.AppendItems([][]byte{item})
}

// AppendItems puts items (raw bytes: the Log frames them with AppendFrame)
// into one record, possibly shared with the items of concurrent callers,
// and returns that record's id once it is durable (once it is in the page
// cache, with Options.NoSync). The items of one call stay together and in
// order. If they cannot fit one record under MaxRecord even alone, the call
// fails with ErrTooLarge, and no other caller is affected. The record's
// item count is its number of items, for AckRange; several callers receive
// the same id. The items are copied; no items: it returns 0 and nil.
func (l *Log) AppendItems(items [][]byte) (uint64, error) {
	id, _, err := l.commit.add(items, nil)
	return id, err
}

// AppendItemsAt is AppendItems that also returns where the call's items
// are in the shared record: they are its items [index, index+len(items)).
// That is what a caller needs to find them again with ReadRange.
func (l *Log) AppendItemsAt(items [][]byte) (id uint64, index int, err error) {
	return l.commit.add(items, nil)
}

// AppendKeyedItemsAt is AppendItemsAt for items that each carry a key
// (keys[i] is items[i]'s; len(keys) must be len(items)): they go into a
// keyed record (WriteKeyed), shared only with other keyed items, and
// Replay hands their keys back. Each key costs 8 bytes of the record.
func (l *Log) AppendKeyedItemsAt(items [][]byte, keys []uint64) (id uint64, index int, err error) {
	if len(keys) != len(items) {
		return 0, 0, fmt.Errorf("wal: AppendKeyedItemsAt: %d items and %d keys", len(items), len(keys))
	}
	return l.commit.add(items, keys)
}

// keyedSize is what a keyed group of n items adds to its frames: their
// keys and the trailer's count (format.go).
func keyedSize(n int) int { return 8*n + keyedTrailer }

func (c *committer) add(items [][]byte, keys []uint64) (uint64, int, error) {
	l := c.l
	keyed := keys != nil
	var group uint8 // the call's key group, taken outside the lock
	if keyed && len(keys) > 0 && l.opts.KeyGroup != nil {
		group = l.opts.KeyGroup(keys[0])
	}
	size := 0
	for _, item := range items {
		size += FrameSize(len(item))
	}
	if keyed {
		size += 8 * len(keys)
		if size+keyedTrailer > l.opts.MaxRecord {
			return 0, 0, fmt.Errorf("%w: %d keyed items of %d bytes framed with their keys, the limit is %d", ErrTooLarge, len(items), size+keyedTrailer, l.opts.MaxRecord)
		}
	}
	if size > l.opts.MaxRecord {
		return 0, 0, fmt.Errorf("%w: %d items of %d bytes framed, the limit is %d", ErrTooLarge, len(items), size, l.opts.MaxRecord)
	}
	if len(items) == 0 {
		return 0, 0, nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, 0, ErrClosed
	}
	open := &c.cur
	if keyed {
		open = &c.curKey
	}
	cur := *open
	used := len(cur.buf)
	if keyed {
		used += keyedSize(cur.n)
	}
	// A group also closes before its record would hold more items than a
	// record header can state, so that its count is known at Open.
	if cur.n > 0 && (used+size > l.opts.GroupBytes || cur.n+len(items) > maxStoredItems) {
		c.sealed = append(c.sealed, cur)
		cur = c.newGroupLocked()
		*open = cur
	}
	index := cur.n
	start := len(cur.buf)
	for _, item := range items {
		cur.buf = AppendFrame(cur.buf, item)
	}
	call := -1
	if keyed && l.opts.KeyGroup != nil {
		if cur.calls == nil {
			if n := len(c.freeCalls); n > 0 {
				cur.calls, c.freeCalls = c.freeCalls[n-1], c.freeCalls[:n-1]
			}
		}
		call = len(cur.calls)
		cur.calls = append(cur.calls, groupCall{start: start, end: len(cur.buf), first: int32(index), n: int32(len(items)), group: group})
	}
	if keyed {
		if cur.keys == nil {
			if n := len(c.freeKey); n > 0 {
				cur.keys, c.freeKey = c.freeKey[n-1], c.freeKey[:n-1]
			} else {
				cur.keys = make([]uint64, 0, len(keys))
			}
		}
		cur.keys = append(cur.keys, keys...)
	}
	cur.n += len(items)
	c.calls.Add(1)
	c.mu.Unlock()
	if index == 0 {
		c.wake()
	}
	<-cur.done
	if call >= 0 && cur.firsts != nil {
		index = int(cur.firsts[call])
	}
	return cur.id, index, cur.err
}

// waitDurable returns once every id <= id is durable.
func (l *Log) waitDurable(id uint64) error {
	if l.synced.Load() >= id {
		return nil
	}
	w := l.startWait(id)
	<-w.done
	return w.err
}

// startWait registers a wait for every id <= id to be durable with the
// committer and wakes it; the wait's done is closed when it has ended (at
// once if the log is closed).
func (l *Log) startWait(id uint64) *syncWait {
	w := &syncWait{target: id, done: make(chan struct{})}
	c := &l.commit
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if l.synced.Load() < id {
			w.err = ErrClosed
		}
		close(w.done)
		return w
	}
	c.waiters = append(c.waiters, w)
	c.syncWaits.Add(1)
	c.mu.Unlock()
	c.wake()
	return w
}

// PendingSync is a sync under way, started by StartSync.
type PendingSync struct{ w *syncWait }

// Done is closed once the sync has ended.
func (p *PendingSync) Done() <-chan struct{} { return p.w.done }

// Err tells how the sync ended, once Done is closed: nil when every record
// written before StartSync is durable.
func (p *PendingSync) Err() error {
	<-p.w.done
	return p.w.err
}

// StartSync is Sync without the wait: it asks the group commit to make
// every record written so far durable and returns at once, so that the
// caller goes on (writing, say) during the fdatasync. It shares the
// fdatasync with every other wait in the same round, as Sync does.
func (l *Log) StartSync() *PendingSync {
	l.mu.Lock()
	last := l.nextID - 1
	closed := l.closed
	l.mu.Unlock()
	if closed || l.synced.Load() >= last {
		w := &syncWait{target: last, done: make(chan struct{})}
		if closed {
			w.err = ErrClosed // as Sync
		}
		close(w.done)
		return &PendingSync{w}
	}
	return &PendingSync{l.startWait(last)}
}

// run is the committer goroutine.
func (c *committer) run() {
	defer close(c.exited)
	z := &compressor{c: c.l.opts.Compression}
	o := &groupOrder{}
	var batch []*itemGroup
	var waiters []*syncWait
	for {
		select {
		case <-c.kick:
		case <-c.stop:
			c.commitAll(z, o, batch[:0], waiters[:0]) // what arrived before close
			return
		}
		batch, waiters = c.commitAll(z, o, batch[:0], waiters[:0])
	}
}

// commitAll commits rounds until nothing is waiting.
func (c *committer) commitAll(z *compressor, o *groupOrder, batch []*itemGroup, waiters []*syncWait) ([]*itemGroup, []*syncWait) {
	l := c.l
	// What the next round gathers (gather): the appends the last round
	// woke and those that came during it, and how long the last round's
	// write and fdatasync took.
	var expect, woke int64
	var lastSync time.Duration
	for {
		if woke > 1 {
			c.gather(expect, lastSync)
		}
		c.mu.Lock()
		woke = c.calls.Swap(0)
		batch = append(batch[:0], c.sealed...)
		clear(c.sealed)
		c.sealed = c.sealed[:0]
		if c.cur.n > 0 {
			batch = append(batch, c.cur)
			c.cur = c.newGroupLocked()
		}
		if c.curKey.n > 0 {
			batch = append(batch, c.curKey)
			c.curKey = c.newGroupLocked()
		}
		waiters = append(waiters[:0], c.waiters...)
		c.syncWaits.Store(0)
		clear(c.waiters)
		c.waiters = c.waiters[:0]
		c.mu.Unlock()
		if len(batch) == 0 && len(waiters) == 0 {
			return batch, waiters
		}
		t1 := time.Now()
		written := false
		for _, g := range batch {
			kind := uint8(kindData)
			if g.keys != nil {
				if len(g.calls) > 1 {
					o.order(g)
				}
				// The keys go after the frames (format.go): the
				// buffer grows, nothing is copied.
				g.buf = AppendKeys(g.buf, g.keys)
				kind |= recordKeyed
			}
			stored, codec := z.compress(g.buf)
			g.id, g.err = l.writeRecord(stored, codec, kind, g.n)
			if g.err == nil {
				written = true
				l.stats.items.Add(uint64(g.n))
			}
		}
		var syncErr error
		if (written && !l.opts.NoSync) || len(waiters) > 0 {
			syncErr = l.syncRound()
		}
		if syncErr != nil {
			for _, g := range batch {
				if g.err == nil {
					g.err = syncErr
				}
			}
		}
		for _, w := range waiters {
			if l.synced.Load() < w.target {
				w.err = syncErr
				if w.err == nil {
					w.err = fmt.Errorf("wal: record %d not durable after a sync round", w.target) // cannot happen: a round covers every record written before it
				}
			}
		}
		lastSync = time.Since(t1)
		c.mu.Lock()
		for _, g := range batch {
			if cap(g.buf) <= 2*l.opts.GroupBytes && len(c.free) < 4 {
				c.free = append(c.free, g.buf[:0])
			}
			g.buf = nil
			if g.keys != nil && cap(g.keys) <= maxStoredItems && len(c.freeKey) < 4 {
				c.freeKey = append(c.freeKey, g.keys[:0])
			}
			g.keys = nil
			// Its callers read firsts after done, never calls.
			if g.calls != nil && cap(g.calls) <= maxKeptCalls && len(c.freeCalls) < 4 {
				c.freeCalls = append(c.freeCalls, g.calls[:0])
			}
			g.calls = nil
		}
		c.mu.Unlock()
		// Those appended since the round took its groups, and those it
		// wakes: counted before the wake, which the first woken may
		// outrun.
		expect = woke + c.calls.Load()
		// Wake the callers outside the lock: waking a thousand goroutines
		// takes a while, and they will want the lock right away.
		for _, g := range batch {
			close(g.done)
		}
		for _, w := range waiters {
			close(w.done)
		}
		clear(batch)
		clear(waiters)
	}
}

// maxKeptCalls bounds the call lists the committer keeps for reuse (40
// bytes a call): a group of more calls than that, rare, gets its own.
const maxKeptCalls = 4096

// groupOrder is the committer's scratch for ordering keyed groups.
type groupOrder struct {
	buf  []byte
	keys []uint64
	perm []int32 // the calls' indexes, in their new order
}

// order puts the calls of keyed group g in the order of their key group,
// stably (calls of one group keep their arrival order), each
// call's items together and in order, and sets g.firsts to where each
// call's items now start. The queue's keyed shards are key groups: it takes
// a shard's items into a batch together, and neighbouring shards' often
// into the same one, so with its record ordered a batch holds a few runs
// of each record rather than items scattered over it; every run costs an
// acknowledgement, an ack-log entry and a range the log keeps until the
// record is done, where scattered items cost one each.
func (o *groupOrder) order(g *itemGroup) {
	var counts [257]int32
	sorted := true
	last := uint8(0)
	for _, call := range g.calls {
		k := call.group
		counts[int(k)+1]++
		if k < last {
			sorted = false
		}
		last = k
	}
	if sorted {
		return
	}
	for i := 1; i < len(counts); i++ {
		counts[i] += counts[i-1]
	}
	if cap(o.perm) < len(g.calls) {
		o.perm = make([]int32, len(g.calls))
	}
	perm := o.perm[:len(g.calls)]
	for i, call := range g.calls {
		k := call.group
		perm[counts[k]] = int32(i)
		counts[k]++
	}
	buf, keys := o.buf[:0], o.keys[:0]
	firsts := make([]int32, len(g.calls)) // read by the callers after done: not reused
	for _, i := range perm {
		call := &g.calls[i]
		buf = append(buf, g.buf[call.start:call.end]...)
		firsts[i] = int32(len(keys))
		keys = append(keys, g.keys[call.first:call.first+call.n]...)
	}
	g.firsts = firsts
	o.buf, g.buf = g.buf[:0], buf
	o.keys, g.keys = g.keys[:0], keys
}

// gather waits, before a round takes its groups, for the callers the
// last round woke to append again, so that they share this round's
// fdatasync rather than wait through it for the next one: a caller that
// appends in a loop comes back right after its wake, but a thousand
// woken goroutines take a while to run on a few cores, and a round cut
// at once holds the first few of them while the rest queue behind its
// fdatasync. It yields the processor to them meanwhile, and stops waiting
// when expect appends are in, when none has come for gatherIdle (the
// others are not coming back soon), after limit (the last round's write
// and fdatasync: waiting longer delays the early ones by more than a round
// would), when a Sync or StartSync waits, or when the log closes.
func (c *committer) gather(expect int64, limit time.Duration) {
	idle := c.l.opts.gatherIdle
	limit = max(limit, idle)
	start := time.Now()
	last, seen := start, c.calls.Load()
	for n := seen; n < expect && c.syncWaits.Load() == 0; n = c.calls.Load() {
		select {
		case <-c.stop:
			return
		default:
		}
		now := time.Now()
		if n != seen {
			last, seen = now, n
		} else if now.Sub(last) > idle {
			return
		}
		if now.Sub(start) > limit {
			return
		}
		runtime.Gosched()
	}
}

// gatherIdle is how long gather waits for the next caller to come back:
// a woken caller runs again within microseconds unless it does something
// else first.
const gatherIdle = 20 * time.Microsecond

// close refuses new groups and waits, lets the committer finish what it
// holds, and waits for it to exit.
func (c *committer) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.exited
}
