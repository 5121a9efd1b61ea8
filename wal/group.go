package wal

import (
	"fmt"
	"sync"
)

// groupCommit turns items appended concurrently into records: every item
// that arrives while the committer is busy joins the open group, and the
// committer writes each group as one record (framed with AppendFrame,
// compressed once) and covers all of them with one fdatasync. The cost of a
// record and of a sync is thus shared by every appender that waited for it,
// which is what makes per-item durability cheap under load.
type groupCommit struct {
	l *Log

	mu     sync.Mutex
	closed bool
	cur    *itemGroup   // the open group; items are framed into cur.buf
	sealed []*itemGroup // full groups waiting for the committer, in order
	free   [][]byte     // payload buffers to reuse
	kick   chan struct{}
	stop   chan struct{}
	exited chan struct{}
}

// itemGroup is one future record. Its appenders wait on done and then read
// id and err, which the committer sets before closing done.
type itemGroup struct {
	buf  []byte
	n    int
	id   uint64
	err  error
	done chan struct{}
}

func (g *groupCommit) init(l *Log) {
	g.l = l
	g.kick = make(chan struct{}, 1)
	g.stop = make(chan struct{})
	g.exited = make(chan struct{})
	g.cur = g.newGroupLocked()
}

func (g *groupCommit) newGroupLocked() *itemGroup {
	var buf []byte
	if n := len(g.free); n > 0 {
		buf, g.free = g.free[n-1][:0], g.free[:n-1]
	}
	return &itemGroup{buf: buf, done: make(chan struct{})}
}

// AppendItem adds item to the record being assembled and returns that
// record's id once it is durable (once it is written, with
// Options.NoSync). Items appended concurrently share a record and a sync;
// one record holds the items in the order their AppendItem calls took the
// group lock. ForEachItem splits a replayed payload into its items.
// Several callers receive the same id, so acknowledge per item with
// AckItems(id, 1) (the record is acked with its last item), or Ack(id) only
// once every item of the record has been delivered. The item is copied;
// the caller may reuse it when AppendItem returns.
func (l *Log) AppendItem(item []byte) (uint64, error) {
	return l.groups.add(item)
}

// AppendItems is AppendItem for several items at once: they go into the
// same record, in order, for one wait. Their framed total must fit in
// Options.MaxRecord. No items: it returns 0 and nil at once.
func (l *Log) AppendItems(items [][]byte) (uint64, error) {
	return l.groups.add(items...)
}

func (g *groupCommit) add(items ...[]byte) (uint64, error) {
	l := g.l
	size := 0
	for _, item := range items {
		size += FrameSize(len(item))
	}
	if size > l.opts.MaxRecord {
		return 0, fmt.Errorf("%w: %d items of %d bytes framed, the limit is %d", ErrTooLarge, len(items), size, l.opts.MaxRecord)
	}
	if len(items) == 0 {
		return 0, nil
	}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, ErrClosed
	}
	cur := g.cur
	if cur.n > 0 && len(cur.buf)+size > l.opts.GroupBytes {
		g.sealed = append(g.sealed, cur)
		cur = g.newGroupLocked()
		g.cur = cur
	}
	first := cur.n == 0
	for _, item := range items {
		cur.buf = AppendFrame(cur.buf, item)
	}
	cur.n += len(items)
	g.mu.Unlock()
	if first {
		select {
		case g.kick <- struct{}{}:
		default:
		}
	}
	<-cur.done
	return cur.id, cur.err
}

// run is the committer goroutine.
func (g *groupCommit) run() {
	defer close(g.exited)
	defer g.l.done.Done()
	z := &compressor{c: g.l.opts.Compression}
	var batch []*itemGroup
	for {
		select {
		case <-g.kick:
		case <-g.stop:
			g.commitAll(z, batch[:0]) // what arrived before close
			return
		}
		batch = g.commitAll(z, batch[:0])
	}
}

// commitAll commits groups until none is waiting.
func (g *groupCommit) commitAll(z *compressor, batch []*itemGroup) []*itemGroup {
	l := g.l
	for {
		g.mu.Lock()
		batch = append(batch[:0], g.sealed...)
		clear(g.sealed)
		g.sealed = g.sealed[:0]
		if g.cur.n > 0 {
			batch = append(batch, g.cur)
			g.cur = g.newGroupLocked()
		}
		g.mu.Unlock()
		if len(batch) == 0 {
			return batch
		}
		var last uint64
		for _, grp := range batch {
			stored, codec := z.compress(grp.buf)
			grp.id, grp.err = l.writeRecord(stored, codec, kindData)
			if grp.err == nil {
				last = grp.id
				l.stats.items.Add(uint64(grp.n))
				// Known before any appender learns the id, so AckItems
				// can never see a record without its count.
				l.amu.Lock()
				l.itemsLeft[grp.id] = grp.n
				l.amu.Unlock()
			}
		}
		if last != 0 && !l.opts.NoSync {
			if err := l.waitDurable(last); err != nil {
				l.amu.Lock()
				for _, grp := range batch {
					if grp.err == nil {
						delete(l.itemsLeft, grp.id)
						grp.err, grp.id = err, 0
					}
				}
				l.amu.Unlock()
			}
		}
		g.mu.Lock()
		for _, grp := range batch {
			if cap(grp.buf) <= 2*l.opts.GroupBytes && len(g.free) < 4 {
				g.free = append(g.free, grp.buf[:0])
			}
			grp.buf = nil
		}
		g.mu.Unlock()
		// Wake the appenders outside the lock: waking a thousand goroutines
		// takes a while, and they will want the lock right away.
		for _, grp := range batch {
			close(grp.done)
		}
		clear(batch)
	}
}

// close refuses new items, lets the committer write what it holds, and
// waits for it to exit.
func (g *groupCommit) close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	g.mu.Unlock()
	close(g.stop)
	<-g.exited
}
