package wal

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Log is an open write-ahead log directory. All methods are safe for
// concurrent use.
type Log struct {
	dir   string
	opts  Options
	log   *slog.Logger
	lock  *os.File // holds the flock until Close
	zpool sync.Pool

	// mu guards the segment list and the writes into the active mapping.
	mu       sync.Mutex
	closed   bool
	isClosed atomic.Bool // closed, readable without mu
	broken   error       // a failed write or sync; every later append fails with it
	segs     []*segment  // live segments in id order; the active one last
	active   *segment    // mapped read-write; nil until the first append after Open or a roll
	unsynced []*segment  // retired segments with possibly undurable data; their fds are still open
	spare    *os.File    // the next segment, ready (see prepLoop); counted in bytes
	prepKick chan struct{}
	nextID   uint64
	bytes    int64 // sum of live segment file sizes

	// smu guards the sync group commit: one goroutine at a time runs
	// fdatasync on behalf of everyone who wrote before it started.
	smu     sync.Mutex
	scond   *sync.Cond
	syncing bool
	synced  uint64 // every id <= synced is durable
	syncErr error

	// amu guards the ack tracker and the ack file.
	amu       sync.Mutex
	acks      ackTracker
	itemsLeft map[uint64]int // records built by AppendItem(s): items not yet acknowledged
	issued    atomic.Uint64  // highest id ever issued (recovered or appended)
	ackFile   *ackFile
	persisted atomic.Uint64
	ackKick   chan struct{}
	stop      chan struct{}
	done      sync.WaitGroup

	// Replay's view: the segments recovered by Open.
	recoveredLast uint64

	groups groupCommit

	stats struct {
		appended, items, syncs, replayed, corrupt, quarantined atomic.Uint64
	}
}

// segment is one segment file.
type segment struct {
	name    string
	firstID uint64
	lastID  uint64 // last id written or recovered; firstID-1 while empty
	size    int64  // file size
	end     int64  // recovered: offset past the intact prefix

	// Active (and retired-but-unsynced) segments only.
	f   *os.File
	mem []byte // read-write mapping, nil once retired
	pos int64

	index []indexEntry // every indexEvery-th record, for ReadRange
}

// Stats is a snapshot of a Log's counters and gauges.
type Stats struct {
	Appended    uint64 // records appended since Open
	Items       uint64 // items appended through AppendItem since Open
	Syncs       uint64 // fdatasync rounds (one serves every writer waiting)
	Replayed    uint64 // records handed to a Replay callback
	Corrupt     uint64 // records lost to damage, found by Open or Replay
	Quarantined uint64 // damaged segment files moved aside as *.corrupt
	Segments    int    // live segment files
	Bytes       int64  // bytes of the live segment files (preallocated size) and the prepared spare
	LastID      uint64 // highest record id issued
	AckMark     uint64 // every id <= AckMark is acknowledged
	Persisted   uint64 // the ack mark as last written to disk
}

// Open locks dir (creating it 0700 if needed), recovers it and returns a
// Log ready to append. Damage never makes Open fail: the intact records
// before it are kept, the lost ones counted in Stats.Corrupt, the damaged
// file moved aside as <segment>.corrupt, and a report logged. Records above
// the ack mark are waiting for Replay.
func Open(dir string, opts Options) (*Log, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("wal: flock %s: %w", dir, err)
	}
	l := &Log{
		dir:       dir,
		opts:      opts,
		log:       opts.Logger.With("wal", dir),
		lock:      lock,
		ackKick:   make(chan struct{}, 1),
		prepKick:  make(chan struct{}, 1),
		itemsLeft: map[uint64]int{},
		stop:      make(chan struct{}),
	}
	l.scond = sync.NewCond(&l.smu)
	l.zpool.New = func() any { return &compressor{c: opts.Compression} }
	if err := l.recover(); err != nil {
		l.releaseOpenFiles()
		return nil, err
	}
	l.groups.init(l)
	l.done.Add(3)
	go l.ackLoop()
	go l.groups.run()
	go l.prepLoop()
	if !opts.noSpare {
		l.kickPreparer() // the first segment, too, should be a prepared one
	}
	return l, nil
}

func (l *Log) releaseOpenFiles() {
	if l.ackFile != nil {
		l.ackFile.f.Close()
	}
	l.lock.Close() // releases the flock
}

// Append writes payload as one record and returns its id once the record is
// durable (unless Options.NoSync). Concurrent Appends share one fdatasync.
// The payload is compressed by the calling goroutine and not retained.
func (l *Log) Append(payload []byte) (uint64, error) {
	id, err := l.Write(payload)
	if err != nil || l.opts.NoSync {
		return id, err
	}
	return id, l.waitDurable(id)
}

// Write writes payload as one record without waiting for it to be durable:
// it survives a crash of the process but not of the machine until Sync (or
// a durable append) returns.
func (l *Log) Write(payload []byte) (uint64, error) {
	if len(payload) > l.opts.MaxRecord {
		return 0, fmt.Errorf("%w: payload of %d bytes, the limit is %d", ErrTooLarge, len(payload), l.opts.MaxRecord)
	}
	z := l.zpool.Get().(*compressor)
	stored, codec := z.compress(payload)
	id, err := l.writeRecord(stored, codec, kindData)
	l.zpool.Put(z)
	return id, err
}

// Sync makes every record written so far durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	last := l.nextID - 1
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.waitDurable(last)
}

// writeRecord copies one record into the active segment, rolling to a new
// segment when it does not fit, and returns its id.
func (l *Log) writeRecord(stored []byte, codec, kind uint8) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if l.broken != nil {
		return 0, l.broken
	}
	need := recordSize(len(stored))
	if need > l.opts.SegmentSize-segmentHeaderSize {
		// Options validation makes this impossible; never index past a mapping.
		return 0, fmt.Errorf("%w: record of %d bytes does not fit a segment", ErrTooLarge, need)
	}
	if l.active == nil || l.active.pos+need > l.active.size {
		if err := l.rollLocked(); err != nil {
			return 0, err
		}
	}
	s := l.active
	id := l.nextID
	err := withFaultsAsErrors(func() error {
		encodeRecord(s.mem[s.pos:s.pos+need], recordHeader{id: id, time: time.Now().UnixNano(), codec: codec, kind: kind}, stored)
		return nil
	})
	if err != nil {
		l.broken = fmt.Errorf("wal: write %s: %w", s.name, err)
		return 0, l.broken
	}
	if (id-s.firstID)%indexEvery == 0 {
		s.index = append(s.index, indexEntry{id, s.pos})
	}
	s.pos += need
	s.lastID = id
	l.nextID++
	l.issued.Store(id)
	l.stats.appended.Add(1)
	return id, nil
}

// rollLocked retires the active segment and creates the next one. On
// failure the log has no active segment and the next append tries again.
func (l *Log) rollLocked() error {
	if s := l.active; s != nil {
		_ = unix.Munmap(s.mem) // the page cache keeps the data; the fd syncs it
		s.mem = nil
		l.unsynced = append(l.unsynced, s)
		l.active = nil
	}
	defer l.kickPreparer() // have the segment after this one ready in time
	size := l.opts.SegmentSize
	name := segmentName(l.nextID)
	path := filepath.Join(l.dir, name)
	var f *os.File
	fail := func(err error) error {
		f.Close()
		os.Remove(path)
		l.bytes -= size
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			return fmt.Errorf("%w: allocate %s: %w", ErrFull, name, err)
		}
		return fmt.Errorf("wal: %s: %w", name, err)
	}
	if l.spare != nil {
		// The preparer's file: allocated, zero-filled and synced already,
		// and counted in l.bytes. Renaming it is all a roll costs.
		f, l.spare = l.spare, nil
		if err := os.Rename(filepath.Join(l.dir, spareFileName), path); err != nil {
			return fail(err)
		}
	} else {
		if l.opts.MaxBytes > 0 && l.bytes+size > l.opts.MaxBytes {
			return fmt.Errorf("%w: MaxBytes %d reached (%d bytes in %d segments)", ErrFull, l.opts.MaxBytes, l.bytes, len(l.segs))
		}
		var err error
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("wal: create segment: %w", err)
		}
		l.bytes += size
		if err := l.opts.allocate(f, size); err != nil {
			return fail(err)
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("mmap: %w", err))
	}
	err = withFaultsAsErrors(func() error {
		putSegmentHeader(mem, segmentHeader{codec: l.opts.Compression.codec(), firstID: l.nextID, size: uint64(size)})
		return nil
	})
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		unix.Munmap(mem)
		return fail(err)
	}
	s := &segment{name: name, firstID: l.nextID, lastID: l.nextID - 1, size: size, f: f, mem: mem, pos: segmentHeaderSize}
	l.active = s
	l.segs = append(l.segs, s)
	return nil
}

// spareFileName is the next segment, prepared ahead by prepLoop.
const spareFileName = "spare.tmp"

func (l *Log) kickPreparer() {
	select {
	case l.prepKick <- struct{}{}:
	default:
	}
}

// prepLoop keeps one spare segment file ready so that a roll is a rename,
// not an allocation on the append path. With Options.ZeroFill, the spare
// is written with zeros: on ext4 and xfs an fallocated range is "unwritten",
// and the first fdatasync after writing into it must also commit the extent
// conversion to the journal, which made each group commit about 3x slower
// in measurements here. Zero-filling moves that cost off the commit path
// (PostgreSQL zero-fills its WAL segments for the same reason), at the price
// of writing each segment twice.
func (l *Log) prepLoop() {
	defer l.done.Done()
	for {
		select {
		case <-l.stop:
			return
		case <-l.prepKick:
		}
		size := l.opts.SegmentSize
		l.mu.Lock()
		if l.closed || l.spare != nil || (l.opts.MaxBytes > 0 && l.bytes+size > l.opts.MaxBytes) {
			l.mu.Unlock()
			continue
		}
		l.bytes += size // reserved while being prepared
		l.mu.Unlock()
		f, err := l.prepareSpare(size)
		l.mu.Lock()
		if err != nil || l.closed {
			l.bytes -= size
			if f != nil {
				f.Close()
				os.Remove(filepath.Join(l.dir, spareFileName))
			}
			if err != nil && !errors.Is(err, errStopped) {
				l.log.Debug("wal: preparing the next segment failed; the next roll allocates it itself", "err", err)
			}
		} else {
			l.spare = f
		}
		l.mu.Unlock()
	}
}

var errStopped = errors.New("wal: closing")

func (l *Log) prepareSpare(size int64) (*os.File, error) {
	path := filepath.Join(l.dir, spareFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := l.opts.allocate(f, size); err != nil {
		return f, err
	}
	if l.opts.ZeroFill {
		zeros := make([]byte, min(size, 1<<20))
		for off := int64(0); off < size; off += int64(len(zeros)) {
			select {
			case <-l.stop:
				return f, errStopped
			default:
			}
			if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off); err != nil {
				return f, err
			}
		}
	}
	return f, fdatasync(f)
}

// waitDurable returns once every id <= id is durable. The first waiter to
// find no sync running becomes the leader: it syncs everything written so
// far, then wakes the others, most of whom find themselves covered.
func (l *Log) waitDurable(id uint64) error {
	l.smu.Lock()
	defer l.smu.Unlock()
	for l.synced < id {
		if l.syncErr != nil {
			return l.syncErr
		}
		if l.syncing {
			l.scond.Wait()
			continue
		}
		l.syncing = true
		l.smu.Unlock()
		target, err := l.syncNow()
		l.smu.Lock()
		l.syncing = false
		if err != nil {
			l.syncErr = err
		} else {
			l.synced = max(l.synced, target)
		}
		l.scond.Broadcast()
	}
	return nil
}

// syncNow makes everything written before the call durable and returns the
// last id it covers. Only one syncNow runs at a time (waitDurable's leader,
// or Close after waiting it out), which is what lets it close the fds of
// retired segments once they are synced.
func (l *Log) syncNow() (uint64, error) {
	l.mu.Lock()
	target := l.nextID - 1
	retired := l.unsynced
	l.unsynced = nil
	active := l.active
	l.mu.Unlock()
	var firstErr error
	for _, s := range retired {
		if err := l.opts.syncFile(s.f); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("wal: fdatasync %s: %w", s.name, err)
		}
		s.f.Close()
		s.f = nil
	}
	if active != nil && firstErr == nil {
		// The mapping's dirty pages are the file's page cache pages:
		// fdatasync on the fd writes them back just as msync(MS_SYNC) would,
		// and stays safe if the segment is retired and unmapped meanwhile.
		if err := l.opts.syncFile(active.f); err != nil {
			firstErr = fmt.Errorf("wal: fdatasync %s: %w", active.name, err)
		}
	}
	l.stats.syncs.Add(1)
	if firstErr != nil {
		// After a failed fdatasync the kernel may have dropped the dirty
		// pages and marked them clean: a retry could "succeed" without the
		// data. The log refuses further writes instead.
		l.mu.Lock()
		if l.broken == nil {
			l.broken = firstErr
		}
		l.mu.Unlock()
		l.log.Error("wal sync failed; the log refuses further appends", "err", firstErr)
		return 0, firstErr
	}
	return target, nil
}

// Ack marks record id as delivered. Acks may come in any order; the ack
// mark is the highest id with every id at or below it acknowledged. The
// mark is written to disk crash-safely in the background (at most every
// Options.AckInterval, and at Close); segments wholly at or below the
// written mark are then deleted. Records above the mark on disk at a crash
// are replayed by the next Open: delivery is at-least-once.
func (l *Log) Ack(id uint64) error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	if id == 0 || id > l.issued.Load() {
		return fmt.Errorf("wal: ack of id %d, which was never issued (last %d)", id, l.issued.Load())
	}
	l.amu.Lock()
	delete(l.itemsLeft, id) // acknowledged whole, whatever AckItems counted
	moved := l.acks.ack(id, id)
	l.amu.Unlock()
	if moved {
		l.kickAckWriter()
	}
	return nil
}

// kickAckWriter tells ackLoop the mark moved (never blocks: one pending
// kick is enough).
func (l *Log) kickAckWriter() {
	select {
	case l.ackKick <- struct{}{}:
	default:
	}
}

// AckItems records that n items of record id were delivered. Once every
// item of a record built by AppendItem or AppendItems in this process has
// been acknowledged, the record is acknowledged as by Ack. This is how a
// caller that delivers items one by one, in batches that mix records, acks
// the records AppendItem shares between callers: it needs no count of its
// own. (A replayed record arrives whole: use Ack for it.)
func (l *Log) AckItems(id uint64, n int) error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	l.amu.Lock()
	left, ok := l.itemsLeft[id]
	if !ok || n <= 0 || n > left {
		l.amu.Unlock()
		if !ok {
			return fmt.Errorf("wal: AckItems(%d, %d): not a record of AppendItem with items outstanding", id, n)
		}
		return fmt.Errorf("wal: AckItems(%d, %d): %d items outstanding", id, n, left)
	}
	moved := false
	if left == n {
		delete(l.itemsLeft, id)
		moved = l.acks.ack(id, id)
	} else {
		l.itemsLeft[id] = left - n
	}
	l.amu.Unlock()
	if moved {
		l.kickAckWriter()
	}
	return nil
}

// Checkpoint writes the ack mark now and deletes the segments wholly below
// it, instead of waiting for the background writer.
func (l *Log) Checkpoint() error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.persistMark()
}

// ackLoop writes the ack mark in the background, at most once per
// AckInterval, so that acks from a fast Send path cost one fdatasync per
// interval rather than one each.
func (l *Log) ackLoop() {
	defer l.done.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-l.ackKick:
		}
		if err := l.persistMark(); err != nil {
			l.log.Error("wal: writing the ack mark failed", "err", err)
		}
		t.Reset(l.opts.AckInterval)
		select {
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// persistMark writes the current ack mark if it moved, then deletes the
// segments it covers. The mark is durable before any file goes, so a crash
// in between leaves files the next Open deletes, never a mark behind them.
func (l *Log) persistMark() error {
	l.amu.Lock()
	defer l.amu.Unlock()
	mark := l.acks.mark
	if mark > l.persisted.Load() {
		if err := l.ackFile.write(mark); err != nil {
			return err
		}
		l.persisted.Store(mark)
	}
	return l.deleteCovered(mark)
}

// deleteCovered removes the segments whose every id is <= mark, except the
// active one.
func (l *Log) deleteCovered(mark uint64) error {
	l.mu.Lock()
	var doomed []*segment
	keep := l.segs[:0]
	for _, s := range l.segs {
		if s != l.active && s.lastID <= mark {
			doomed = append(doomed, s)
			l.bytes -= s.size
			continue
		}
		keep = append(keep, s)
	}
	clear(l.segs[len(keep):])
	l.segs = keep
	l.mu.Unlock()
	if len(doomed) == 0 {
		return nil
	}
	var firstErr error
	for _, s := range doomed {
		if err := os.Remove(filepath.Join(l.dir, s.name)); err != nil && !errors.Is(err, os.ErrNotExist) && firstErr == nil {
			firstErr = err
		}
	}
	if err := syncDir(l.dir); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// Stats returns a snapshot of the counters.
func (l *Log) Stats() Stats {
	st := Stats{
		Appended:    l.stats.appended.Load(),
		Items:       l.stats.items.Load(),
		Syncs:       l.stats.syncs.Load(),
		Replayed:    l.stats.replayed.Load(),
		Corrupt:     l.stats.corrupt.Load(),
		Quarantined: l.stats.quarantined.Load(),
		LastID:      l.issued.Load(),
		Persisted:   l.persisted.Load(),
	}
	l.mu.Lock()
	st.Segments = len(l.segs)
	st.Bytes = l.bytes
	l.mu.Unlock()
	l.amu.Lock()
	st.AckMark = l.acks.mark
	l.amu.Unlock()
	return st
}

// Dir returns the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Close commits what AppendItem holds, makes everything written durable,
// writes the ack mark, unmaps and closes the files and releases the lock.
// Later calls return ErrClosed.
func (l *Log) Close() error {
	l.groups.close() // flushes pending items through the normal path
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.isClosed.Store(true)
	l.mu.Unlock()
	close(l.stop)
	l.done.Wait()

	// Wait out a running sync leader; from here on no one else syncs.
	l.smu.Lock()
	for l.syncing {
		l.scond.Wait()
	}
	l.syncing = true
	l.smu.Unlock()

	var errs []error
	l.mu.Lock()
	broken := l.broken
	l.mu.Unlock()
	if broken == nil {
		if target, err := l.syncNow(); err != nil {
			errs = append(errs, err)
		} else {
			l.smu.Lock()
			l.synced = max(l.synced, target)
			l.smu.Unlock()
		}
	}
	l.mu.Lock()
	for _, s := range l.unsynced {
		s.f.Close()
	}
	l.unsynced = nil
	if s := l.active; s != nil {
		_ = unix.Munmap(s.mem)
		s.mem = nil
		s.f.Close()
		l.active = nil
	}
	if l.spare != nil {
		l.spare.Close()
		l.spare = nil
		l.bytes -= l.opts.SegmentSize
		if err := os.Remove(filepath.Join(l.dir, spareFileName)); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Unlock()
	if broken == nil {
		if err := l.persistMark(); err != nil {
			errs = append(errs, err)
		}
	}
	l.smu.Lock()
	l.syncing = false
	if l.syncErr == nil {
		l.syncErr = ErrClosed
	}
	l.scond.Broadcast()
	l.smu.Unlock()
	l.releaseOpenFiles()
	return errors.Join(errs...)
}
