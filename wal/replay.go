package wal

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// ItemRange names items [Off, Off+N) of a record, counted from 0.
type ItemRange struct{ Off, N int }

// Replay calls fn for every record recovered by Open that is not
// acknowledged, in id order, with the decompressed payload (valid only
// during the call) and the items of the record already done with (by
// AckRange, in this process or before a crash), sorted, disjoint and
// non-adjacent; nil when none are. The caller delivers the other items and
// acknowledges them by their index in the record, as AckRange names them.
// Before fn sees a record, its item count is known (stated by its header,
// or else its number of frames), so AckRange checks ranges against it; a
// record whose done items turn out to be all of them is acknowledged and
// not handed out. It stops at and returns the first error fn returns.
// Records appended after Open are not included: they are in memory
// already. A record that verified at Open but does not decompress, or
// whose sealed payload does not authenticate (see Options.EncryptionKey),
// is counted in Stats.Corrupt, acknowledged and skipped.
//
// fn runs on the calling goroutine; while it runs, up to GOMAXPROCS worker
// goroutines decrypt and decompress the records after it, so recovery is
// not limited to one core's speed at either.
//
// A keyed record's payload is its items alone, framed as any other's;
// ReplayRecords hands out its keys too.
func (l *Log) Replay(fn func(id uint64, payload []byte, done []ItemRange) error) error {
	return l.ReplayRecords(func(r *ReplayedRecord) error { return fn(r.ID, r.Payload, r.Done) })
}

// ReplayedRecord is one record ReplayRecords hands out. Its slices are
// valid only during the call.
type ReplayedRecord struct {
	ID uint64
	// Payload is the record's items, framed with AppendFrame (see
	// ForEachItem); a keyed record's keys are not in it.
	Payload []byte
	// Keys are a keyed record's keys (AppendKeyedItemsAt, WriteKeyed),
	// Keys[i] the key of item i; nil for a record written without keys
	// (every record of a format before keyed records included).
	Keys []uint64
	// Done are the items already done with, as Replay names them.
	Done []ItemRange
}

// ReplayRecords is Replay, with each record's keys: see ReplayedRecord.
func (l *Log) ReplayRecords(fn func(r *ReplayedRecord) error) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	var segs []*segment
	for _, s := range l.segs {
		if s.firstID <= l.recoveredLast && s.end > 0 {
			segs = append(segs, s)
		}
	}
	l.mu.Unlock()

	r := newReplayer(l, fn)
	defer r.stop()
	for _, s := range segs {
		l.amu.Lock()
		live := s.live
		l.amu.Unlock()
		if live == 0 {
			continue
		}
		data, unmap, err := mapFile(filepath.Join(l.dir, s.name))
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted: every record in it was acknowledged meanwhile
		}
		if err != nil {
			return fmt.Errorf("wal: replay: %w", err)
		}
		err = withFaultsAsErrors(func() error { return r.segment(s, data) })
		// Every job still reading the mapping is finished before it goes.
		if derr := r.drain(err != nil); err == nil {
			err = derr
		}
		unmap()
		if err != nil {
			return err
		}
	}
	return nil
}

// replayJob is one record on its way through the decompression workers.
type replayJob struct {
	id      uint64
	seg     *segment
	h       recordHeader
	aead    cipher.AEAD // nil: the record is in the clear
	stored  []byte      // aliases the segment mapping
	segment string
	raw     []byte // result; aliases buf, plain or stored (a keyed record's: its items only)
	keys    []byte // a keyed record's keys, 8 bytes each (aliases what raw does)
	buf     []byte // the job's own scratch, kept across reuse
	plain   []byte // its scratch for the unsealed bytes
	err     error
	done    chan struct{}
}

// replayer keeps up to window records in flight: the Replay goroutine scans
// records and queues them; workers decompress them; the Replay goroutine
// hands them to fn in order.
type replayer struct {
	l       *Log
	fn      func(*ReplayedRecord) error
	rec     ReplayedRecord // what fn gets, reused
	keys    []uint64       // rec.Keys' buffer
	limit   int
	jobs    chan *replayJob
	free    []*replayJob
	pending []*replayJob // in id order
	window  int
	workers int
	exited  chan struct{}
}

func newReplayer(l *Log, fn func(*ReplayedRecord) error) *replayer {
	r := &replayer{l: l, fn: fn, limit: l.opts.readLimit()}
	r.workers = min(runtime.GOMAXPROCS(0), 8)
	r.window = 2 * r.workers
	r.jobs = make(chan *replayJob, r.window)
	r.exited = make(chan struct{}, r.workers)
	for i := 0; i < r.workers; i++ {
		go r.work()
	}
	return r
}

func (r *replayer) work() {
	defer func() { r.exited <- struct{}{} }()
	for j := range r.jobs {
		j.err = withFaultsAsErrors(func() error {
			plain, buf, err := unseal(j.aead, j.plain, &j.h, j.stored)
			j.plain = buf
			if err != nil {
				return err
			}
			j.raw, j.buf, err = decompress(j.buf, j.h.codec, plain, r.limit)
			if err == nil && j.h.keyed {
				j.raw, j.keys, _, err = splitKeyed(j.raw)
			}
			return err
		})
		close(j.done)
	}
}

func (r *replayer) stop() {
	close(r.jobs)
	for i := 0; i < r.workers; i++ {
		<-r.exited
	}
}

// segment queues the unacknowledged records of one recovered segment.
func (r *replayer) segment(s *segment, data []byte) error {
	if int64(len(data)) < s.end {
		return fmt.Errorf("%w: %s shrank to %d bytes", ErrCorrupt, s.name, len(data))
	}
	prev := s.firstID - 1
	for pos := int64(segmentHeaderSize); pos < s.end; {
		// Open verified every checksum of these immutable, locked
		// files; replay only re-checks the framing.
		h, stored, size, err := decodeRecordCRC(data[pos:s.end], r.limit, prev+1, false, s.frame)
		if err != nil {
			return fmt.Errorf("%w: %s offset %d: %v", ErrCorrupt, s.name, pos, err)
		}
		pos += size
		prev = h.id
		if h.kind != kindData || r.l.recordDone(s, h.id) {
			continue
		}
		if len(r.pending) == r.window {
			if err := r.deliverOne(); err != nil {
				return err
			}
		}
		var j *replayJob
		if n := len(r.free); n > 0 {
			j, r.free = r.free[n-1], r.free[:n-1]
		} else {
			j = &replayJob{}
		}
		j.id, j.seg, j.h, j.aead, j.stored, j.segment, j.raw, j.keys, j.err = h.id, s, h, s.aead, stored, s.name, nil, nil, nil
		j.done = make(chan struct{})
		r.pending = append(r.pending, j)
		if h.codec == codecNone && s.aead == nil && !h.keyed {
			j.raw = stored
			close(j.done)
			continue
		}
		r.jobs <- j
	}
	return nil
}

// deliverOne waits for the oldest pending record and hands it to fn.
func (r *replayer) deliverOne() error {
	j := r.pending[0]
	r.pending = r.pending[1:]
	<-j.done
	defer func() {
		j.stored, j.raw, j.keys, j.seg = nil, nil, nil, nil
		r.free = append(r.free, j)
	}()
	l := r.l
	if j.err != nil {
		l.stats.corrupt.Add(1)
		l.log.Error("wal: record does not open or decompress; skipped", "segment", j.segment, "id", j.id, "err", j.err)
		_ = l.Ack(j.id)
		return nil
	}
	// Acknowledged meanwhile: skip it. Otherwise its item count, if its
	// header did not state it, is its frames from now on.
	l.amu.Lock()
	rs := &j.seg.recs[j.id-j.seg.firstID]
	finished := false
	if rs.left == itemsUnknown {
		count := min(countFrames(j.raw), int(itemsUnknown)-1)
		rs.left = uint32(count - l.partial.clip(j.id, count))
		l.uncounted--
		l.pending += uint64(rs.left)
		if rs.left == 0 { // its item acks covered it
			l.ackedLocked(j.seg, j.id, rs)
			finished = true
		}
	}
	skip := rs.left == 0
	var done []ItemRange
	if set := l.partial.of(j.id); set != nil && !skip {
		done = make([]ItemRange, len(set.spans))
		for i, sp := range set.spans {
			done[i] = ItemRange{Off: int(sp.lo), N: int(sp.hi - sp.lo + 1)}
		}
	}
	l.amu.Unlock()
	if finished {
		l.kickAckWriter()
	}
	if skip {
		return nil
	}
	l.stats.replayed.Add(1)
	var keys []uint64
	if j.h.keyed {
		r.keys = appendKeysOf(r.keys[:0], j.keys)
		keys = r.keys
	}
	r.rec = ReplayedRecord{ID: j.id, Payload: j.raw, Keys: keys, Done: done}
	return r.fn(&r.rec)
}

// drain delivers every pending record (or, after fn failed, just waits for
// the workers to be done with them, so the mapping can go).
func (r *replayer) drain(failed bool) error {
	var err error
	for len(r.pending) > 0 {
		if failed || err != nil {
			<-r.pending[0].done
			r.pending = r.pending[1:]
			continue
		}
		err = r.deliverOne()
	}
	return err
}

// recordDone reports whether record id of recovered segment s is
// acknowledged.
func (l *Log) recordDone(s *segment, id uint64) bool {
	l.amu.Lock()
	defer l.amu.Unlock()
	return s.recs[id-s.firstID].left == 0
}
