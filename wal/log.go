package wal

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
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
	zpool compressors
	// wbuf is where writeRecord lays out a record before writing it (under
	// mu).
	wbuf []byte

	// mu guards the segment list and the writes into the active segment.
	// Lock order: mu before amu (writeRecord notes each record's item count
	// under amu while it holds mu); never amu before mu.
	mu       sync.Mutex
	closed   bool
	isClosed atomic.Bool // closed, readable without mu
	broken   error       // a failed write or sync; every later append fails with it
	// syncFailed is a failed fdatasync: from then on no sync round
	// succeeds (syncRound), as one could not vouch for what it missed.
	syncFailed error
	segs       []*segment // live segments in id order; the active one last
	active     *segment   // written to; nil until the first append after Open or a roll
	unsynced   []*segment // retired segments with possibly undurable data; their fds are still open
	spare      *os.File   // the next segment, ready (see prepLoop); counted in bytes
	prepKick   chan struct{}
	nextID     uint64
	bytes      int64 // sum of live segment file sizes (for MaxBytes)

	// preparing is true while prepLoop makes the spare, its size already
	// counted in bytes; prepared (on mu) is broadcast when it ends, and on
	// Close. A roll that only the reservation keeps under MaxBytes waits
	// for the spare rather than fail (writeRecord).
	preparing bool
	prepared  sync.Cond

	// The one group commit; synced is its progress: every id <= synced is
	// durable. Only the committer (and Close, after it exited) syncs.
	commit committer
	synced atomic.Uint64

	// amu guards the acknowledgement state: the acknowledged set, the
	// items done with of records partly acknowledged, the acks not yet
	// written to the ack log, and every segment's record states.
	amu        sync.Mutex
	acked      spanSet       // every acknowledged id (delivered, given up on, or lost and counted)
	partial    partialAcks   // items done with of records not yet acknowledged whole
	fresh      spanSet       // acknowledged since the last flush
	freshItems []itemsDone   // item acks since the last flush, in arrival order
	pending    uint64        // items not yet done of the live records whose count is known
	uncounted  int           // live records whose item count is not known (before Replay)
	asegs      []*segment    // segments with records not yet all acknowledged, or the active one, in id order
	liveBytes  int64         // bytes of unacknowledged records and the headers of asegs
	doomed     []*segment    // all acknowledged as of the last flush: deleted after the next one
	issued     atomic.Uint64 // highest id ever issued (recovered or appended)
	persisted  atomic.Uint64 // the ack mark as of the last flush
	// fmu serializes writes to the ack log file (short: a write(2), or a
	// compaction); smu serializes durable flushes (syncLoop, Checkpoint,
	// Close), whose fdatasync runs without fmu, so that the fresh acks of
	// ackLoop never wait behind a sync. Lock order: smu, fmu, amu.
	fmu      sync.Mutex
	smu      sync.Mutex
	syncKick chan struct{}
	ackLog   *ackLog
	flushedW uint64 // the written mark in the ack log
	ackKick  chan struct{}
	stop     chan struct{}
	done     sync.WaitGroup

	// Replay's view: the segments recovered by Open.
	recoveredLast uint64

	// The dead-letter log (dead.go).
	dead deadLog

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
	pos int64
	// zeroed is the end of the range already written, with records or
	// with zeros (zeroAheadLocked): a write below it lands in blocks the file
	// system holds as written. Active segment only; under Log.mu.
	zeroed int64

	index []indexEntry  // every indexEvery-th record, for ReadRange
	aead  cipher.AEAD   // opens its records; nil: written in the clear
	frame recordFraming // its records' framing (format.go)

	// Acknowledgement state, under Log.amu.
	recs   []recState // record firstID+i is recs[i]
	live   int        // records not yet acknowledged
	head   int        // every record before recs[head] is acknowledged (advanced lazily, by Stats)
	sealed bool       // no longer written to: deleted once live is 0
}

// recState is one record's acknowledgement state.
type recState struct {
	time   int64  // the record's timestamp, Unix nanoseconds (Stats.OldestPending)
	left   uint32 // items not yet done; 0: acknowledged
	stored uint32 // stored payload length, for Stats.Bytes
}

// itemsUnknown is the item count of a recovered record whose header does
// not state it (a version 1 segment, or more items than a header holds)
// until Replay counts its frames. AckRange on such a record is kept, and
// the record is acknowledged by Ack, or at Replay if its ranges cover it.
const itemsUnknown = ^uint32(0)

// Stats is a snapshot of a Log's counters and gauges.
type Stats struct {
	Appended    uint64 // records appended since Open
	Items       uint64 // items in the records appended since Open
	Syncs       uint64 // fdatasync rounds (one serves every writer waiting)
	Replayed    uint64 // records handed to a Replay callback
	Corrupt     uint64 // unacknowledged records lost to damage, counted exactly by Open (and Replay)
	Quarantined uint64 // damaged files moved aside as *.corrupt
	Segments    int    // live segment files
	Bytes       int64  // live bytes: unacknowledged records and the headers of the segments holding them
	LastID      uint64 // highest record id issued
	AckMark     uint64 // every id <= AckMark is acknowledged
	Persisted   uint64 // the ack mark as last written to the ack log
	// The backlog: what is not yet acknowledged. ItemsPending counts the
	// items not yet done of unacknowledged records whose item count is
	// known — every record appended since Open, and every recovered
	// record whose header states its count (format version 2, up to
	// 65,534 items). Uncounted is the number of unacknowledged records
	// whose count is not known (recovered from a version 1 segment, or
	// holding more items than a header states) until Replay counts them;
	// their items are not in ItemsPending. OldestPending is the timestamp
	// of the oldest unacknowledged record (zero if none).
	ItemsPending  uint64
	Uncounted     int
	OldestPending time.Time
	DeadLetters   int    // dead letters on disk
	DeadBytes     int64  // their file sizes
	DeadCorrupt   uint64 // dead letters lost to damage (once) or found damaged (at each Open, until purged), counted exactly by Open
}

// Open locks dir (creating it 0700 if needed), recovers it and returns a
// Log ready to append. Damage never makes Open fail: the intact records
// are kept, the unacknowledged records lost are counted in Stats.Corrupt
// (exactly, from the id chain and the ack log), damaged files are moved
// aside as *.corrupt, and a report is logged. Unacknowledged records wait
// for Replay. A full disk anywhere in Open is ErrFull; another Log on dir,
// in this process or another, is ErrLocked.
func Open(dir string, opts Options) (*Log, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	l, err := open(dir, opts)
	if err != nil && (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) && !errors.Is(err, ErrFull) {
		err = fmt.Errorf("%w: %w", ErrFull, err)
	}
	return l, err
}

func open(dir string, opts Options) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := lockDir(dir, opts.Logger)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger.With("wal", dir),
		lock:     lock,
		ackKick:  make(chan struct{}, 1),
		syncKick: make(chan struct{}, 1),
		prepKick: make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	l.prepared.L = &l.mu
	l.zpool.c = opts.Compression
	// Every key a file needs is at hand before recovery reads a record or
	// changes anything: a key problem is a configuration error, never
	// garbage replayed or damage counted.
	err = checkKeys(dir, opts.keys, nil)
	if err == nil {
		err = l.recover()
	}
	if err == nil {
		err = l.recoverDead()
	}
	if err != nil {
		l.releaseOpenFiles()
		return nil, err
	}
	l.commit.init(l)
	l.done.Add(3)
	go l.ackLoop()
	go l.syncLoop()
	go l.prepLoop()
	go l.commit.run()
	if !opts.noSpare {
		l.kickPreparer() // the first segment, too, should be a prepared one
	}
	return l, nil
}

// lockDir takes dir's flock. A LOCK path that is not a regular file is
// moved aside first: it can only be damage, and nobody can hold it.
func lockDir(dir string, logger *slog.Logger) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	if err := quarantineIfNotFile(dir, lockFileName, logger); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	lock, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
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
	return lock, nil
}

func (l *Log) releaseOpenFiles() {
	l.ackLog.close()
	l.dead.close()
	l.lock.Close() // releases the flock
}

// MaxRecord returns the bound on one record's payload (Options.MaxRecord
// after defaults): Write refuses a larger payload, and AppendItems items
// whose frames add up to more.
func (l *Log) MaxRecord() int { return l.opts.MaxRecord }

// Append writes payload as one record and returns its id once the record is
// durable (unless Options.NoSync): Write, then a wait in the group commit,
// so concurrent Appends share one fdatasync. Its item count is as for Write.
func (l *Log) Append(payload []byte) (uint64, error) {
	id, err := l.Write(payload)
	if err != nil || l.opts.NoSync {
		return id, err
	}
	return id, l.waitDurable(id)
}

// Write writes payload as one record without waiting for it to be durable:
// it survives a crash of the process but not of the machine until Sync (or
// a durable append) returns. payload is normally a batch framed with
// AppendFrame: the record's item count (for AckRange) is its number of
// frames; a payload that is not a sequence of frames counts as one item.
// The payload is compressed by the calling goroutine and not retained.
func (l *Log) Write(payload []byte) (uint64, error) {
	if len(payload) > l.opts.MaxRecord {
		return 0, fmt.Errorf("%w: payload of %d bytes, the limit is %d", ErrTooLarge, len(payload), l.opts.MaxRecord)
	}
	return l.writePayload(payload, countFrames(payload), kindData)
}

// WriteKeyed is Write for a keyed payload: items framed with AppendFrame
// followed by their keys (AppendKeys). The record is marked keyed, its
// item count is its number of keys, and Replay hands the keys back with
// the items. A payload whose keys do not match its frames is refused
// (ErrCorrupt) before anything is written.
func (l *Log) WriteKeyed(payload []byte) (uint64, error) {
	if len(payload) > l.opts.MaxRecord {
		return 0, fmt.Errorf("%w: payload of %d bytes, the limit is %d", ErrTooLarge, len(payload), l.opts.MaxRecord)
	}
	_, _, n, err := splitKeyed(payload)
	if err != nil {
		return 0, fmt.Errorf("wal: WriteKeyed: %w", err)
	}
	return l.writePayload(payload, max(n, 1), kindData|recordKeyed)
}

// writePayload compresses payload on the calling goroutine and writes it
// as a record of kind (with recordKeyed or not) holding items items.
func (l *Log) writePayload(payload []byte, items int, kind uint8) (uint64, error) {
	z := l.zpool.get()
	stored, codec := z.compress(payload)
	id, err := l.writeRecord(stored, codec, kind, items)
	l.zpool.put(z)
	if err == nil {
		l.stats.items.Add(uint64(items))
	}
	return id, err
}

// Sync makes every record written so far durable, through the group
// commit: it shares its fdatasync with every other wait in the same round.
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
// segment when it does not fit, and returns its id. kind may carry
// recordKeyed.
func (l *Log) writeRecord(stored []byte, codec, kind uint8, items int) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, ErrClosed
	}
	if l.broken != nil {
		return 0, l.broken
	}
	sealed := len(stored) + l.opts.keys.overhead() // the stored length on disk
	need := recordSize(sealed)
	if need > l.opts.SegmentSize-segmentHeaderSize {
		// Options validation makes this impossible; never write past a segment.
		return 0, fmt.Errorf("%w: record of %d bytes does not fit a segment", ErrTooLarge, need)
	}
	if l.active == nil || l.active.pos+need > l.active.size {
		if l.awaitSpareLocked() {
			if l.closed {
				return 0, ErrClosed
			}
			if l.broken != nil {
				return 0, l.broken
			}
		}
		// Another write may have rolled while mu was released.
		if l.active == nil || l.active.pos+need > l.active.size {
			if err := l.rollLocked(); err != nil {
				if !errors.Is(err, ErrFull) || !l.reclaimableLocked() {
					return 0, err
				}
				// Full only of records already acknowledged: free their
				// segments now (mu released meanwhile), then roll again.
				l.mu.Unlock()
				cerr := l.Checkpoint()
				l.mu.Lock()
				switch {
				case l.closed:
					return 0, ErrClosed
				case l.broken != nil:
					return 0, l.broken
				case cerr != nil:
					return 0, fmt.Errorf("%w (freeing acknowledged segments failed: %w)", err, cerr)
				}
				if l.active == nil || l.active.pos+need > l.active.size {
					if err := l.rollLocked(); err != nil {
						return 0, err
					}
				}
			}
		}
	}
	s := l.active
	id := l.nextID
	now := time.Now().UnixNano()
	if int64(cap(l.wbuf)) < need {
		l.wbuf = make([]byte, need)
	}
	rec := l.wbuf[:need]
	clear(rec[recordOverhead+sealed:]) // the padding, zero as on disk
	encodeSealedRecord(rec, recordHeader{id: id, time: now, codec: codec, kind: kind &^ recordKeyed, keyed: kind&recordKeyed != 0, items: items}, stored, s.aead, s.frame)
	// The id word last, as a record is published (format.go): a process
	// killed between the two writes leaves a zero id, the end of the log,
	// never a record with an id and a torn body.
	err := pwriteAll(s.f, rec[8:], s.pos+8)
	if err == nil {
		err = pwriteAll(s.f, rec[:8], s.pos)
	}
	if cap(l.wbuf) > maxKeptWriteBuffer {
		l.wbuf = nil
	}
	if err != nil {
		l.broken = fmt.Errorf("wal: write %s: %w", s.name, err)
		return 0, l.broken
	}
	if (id-s.firstID)%indexEvery == 0 {
		s.index = append(s.index, indexEntry{id, s.pos})
	}
	s.pos += need
	l.zeroAheadLocked(s)
	s.lastID = id
	l.nextID++
	// The item count exists before anyone learns the id, so AckRange can
	// never see a record without it.
	l.amu.Lock()
	left := uint32(min(max(items, 1), int(itemsUnknown)-1))
	s.recs = append(s.recs, recState{time: now, left: left, stored: uint32(sealed)})
	s.live++
	l.pending += uint64(left)
	l.liveBytes += need
	l.amu.Unlock()
	l.issued.Store(id)
	l.stats.appended.Add(1)
	return id, nil
}

// zeroAheadLocked writes zeros past s's last record, up to the next
// zeroAheadStep boundary, once the records have reached the end of what
// was written before, when the log syncs its appends itself. A segment is
// fallocated, and on ext4 and xfs an fallocated range is "unwritten": the
// first fdatasync after a write into it must also convert the range's
// extents and commit that to the journal, which cost each group commit
// more CPU in the calling thread (a probe of 4 KiB rounds on ext4 here:
// 66–75 µs a round against 45–51 µs on zeros written before), and the
// file system's threads a journal commit.
// Written in steps ahead of the records, the zeros' conversion is paid by
// one round in each step's worth of records instead of by every round,
// and the log writes each byte twice over only what it uses, not the
// whole segment as Options.ZeroFill does. Zeros are what an fallocated
// range reads as and what the scan takes for the end of the log, so they
// change nothing a recovery finds; a failed zero write is left for the
// fdatasync to report, and the segment is not zeroed further. Caller
// holds mu; s is the active segment.
func (l *Log) zeroAheadLocked(s *segment) {
	if l.opts.NoSync || s.pos <= s.zeroed {
		return
	}
	to := min((s.pos+zeroAheadStep-1)&^(zeroAheadStep-1)+zeroAheadStep, s.size)
	s.zeroed = s.size // on failure: no further zeroing
	if s.pos >= to {
		return
	}
	if err := pwriteAll(s.f, zeroBlock[:to-s.pos], s.pos); err != nil {
		return
	}
	s.zeroed = to
}

// zeroAheadStep is how far ahead of its records zeroAheadLocked zeroes a
// segment: with records of a few KiB per group commit, one round in a
// few hundred pays the extent conversion.
const zeroAheadStep = 1 << 20

// zeroBlock is the zeros zeroAheadLocked writes; never written itself.
var zeroBlock [2 * zeroAheadStep]byte

// reclaimableLocked reports whether segments are on disk only because the
// background ack writer has not deleted them yet: every record in them is
// acknowledged (or they wait for the durable flush that deletes them). A
// write refused for MaxBytes or a full disk frees them at once (Checkpoint)
// and tries again, rather than report the log full of records already
// delivered: the writer runs at most every AckInterval, and a burst that
// fills the log meanwhile would otherwise see ErrFull with nothing pending.
// Caller holds mu.
func (l *Log) reclaimableLocked() bool {
	l.amu.Lock()
	defer l.amu.Unlock()
	if len(l.doomed) > 0 {
		return true
	}
	for _, s := range l.asegs {
		if s.sealed && s.live == 0 {
			return true
		}
	}
	return false
}

// maxKeptWriteBuffer bounds the record buffer the Log keeps between
// writes: a larger record gets a buffer of its own.
const maxKeptWriteBuffer = 4 << 20

// pwriteAll writes b at off in f, all of it. Records are written with
// pwrite rather than stored into a shared mapping: an fdatasync
// write-protects the mapped pages it writes back, so the next record's
// store into the same page faulted, and the write-protection and its
// TLB shootdown made each fdatasync slower (about 3x at the p50 with a
// few KiB per round, in a VM).
func pwriteAll(f *os.File, b []byte, off int64) error {
	_, err := f.WriteAt(b, off) // all of b, or an error
	return err
}

// awaitSpareLocked waits (mu held, released meanwhile) while the preparer
// makes the spare and a roll without it would cross MaxBytes: only the
// spare's own reservation stands in the way, so the roll must take the
// spare, not fail with ErrFull. (An empty log whose MaxBytes is one or two
// segments hit this on its first write.) It reports whether it waited.
func (l *Log) awaitSpareLocked() bool {
	waited := false
	for l.preparing && l.spare == nil && !l.closed && l.opts.MaxBytes > 0 &&
		l.bytes+l.dead.bytes.Load()+l.opts.SegmentSize > l.opts.MaxBytes {
		l.prepared.Wait()
		waited = true
	}
	return waited
}

// rollLocked retires the active segment and creates the next one. On
// failure the log has no active segment and the next append tries again.
func (l *Log) rollLocked() error {
	if s := l.active; s != nil {
		l.unsynced = append(l.unsynced, s) // the fd syncs it
		l.active = nil
		l.amu.Lock()
		s.sealed = true
		if s.live == 0 {
			l.kickAckWriter() // nothing left to acknowledge: it can go
		}
		l.amu.Unlock()
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
	zeroed := int64(segmentHeaderSize)
	if l.spare != nil {
		// The preparer's file: allocated, zero-filled and synced already,
		// and counted in l.bytes. Renaming it is all a roll costs.
		f, l.spare = l.spare, nil
		if l.opts.ZeroFill {
			zeroed = size
		}
		if err := os.Rename(filepath.Join(l.dir, spareFileName), path); err != nil {
			return fail(err)
		}
	} else {
		if l.opts.MaxBytes > 0 && l.bytes+l.dead.bytes.Load()+size > l.opts.MaxBytes {
			return fmt.Errorf("%w: MaxBytes %d reached (%d bytes in %d segments, %d in dead letters)", ErrFull, l.opts.MaxBytes, l.bytes, len(l.segs), l.dead.bytes.Load())
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
	hdr := l.opts.keys.header(segmentHeader{codec: l.opts.Compression.codec(), firstID: l.nextID, size: uint64(size)})
	var head [segmentHeaderSize]byte
	putSegmentHeader(head[:], hdr)
	err := pwriteAll(f, head[:], 0)
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fail(err)
	}
	s := &segment{name: name, firstID: l.nextID, lastID: l.nextID - 1, size: size, f: f, pos: segmentHeaderSize, zeroed: zeroed, aead: l.opts.keys.sealer(), frame: hdr.framing()}
	l.active = s
	l.segs = append(l.segs, s)
	l.amu.Lock()
	l.asegs = append(l.asegs, s)
	l.liveBytes += segmentHeaderSize
	l.amu.Unlock()
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
		if l.closed || l.spare != nil || (l.opts.MaxBytes > 0 && l.bytes+l.dead.bytes.Load()+size > l.opts.MaxBytes) {
			l.mu.Unlock()
			continue
		}
		l.bytes += size // reserved while being prepared
		l.preparing = true
		l.mu.Unlock()
		f, err := l.prepareSpare(size)
		l.mu.Lock()
		l.preparing = false
		l.prepared.Broadcast()
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

// dropSpareLocked closes and removes the spare segment and gives its size
// back. A file that cannot be removed is still given back: the next
// prepareSpare truncates the same name and counts it again. Caller holds
// mu; l.spare is not nil.
func (l *Log) dropSpareLocked() error {
	l.spare.Close()
	l.spare = nil
	l.bytes -= l.opts.SegmentSize
	return os.Remove(filepath.Join(l.dir, spareFileName))
}

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

// syncRound runs one fdatasync round for the committer and advances
// synced.
func (l *Log) syncRound() error {
	l.mu.Lock()
	failed := l.syncFailed
	l.mu.Unlock()
	if failed != nil {
		// The pages a failed fdatasync did not write may be gone and
		// marked clean: a later fdatasync succeeds without them, so no
		// sync round can vouch for the records written before it.
		return failed
	}
	target, err := l.syncNow()
	if err != nil {
		return err
	}
	if target > l.synced.Load() {
		l.synced.Store(target)
		l.kickAckWriter() // the written mark moved: the ack log records it
	}
	return nil
}

// syncNow makes everything written before the call durable and returns the
// last id it covers. Only one syncNow runs at a time (the committer, or
// Close after the committer exited), which is what lets it close the fds of
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
		if l.syncFailed == nil {
			l.syncFailed = firstErr
		}
		l.mu.Unlock()
		l.log.Error("wal sync failed; the log refuses further appends", "err", firstErr)
		return 0, firstErr
	}
	return target, nil
}

// Ack acknowledges record id whole: its items are all done with (delivered
// or given up on), whatever AckRange recorded. Acks may come in any order
// and repeat. They are written to the ack log within about a millisecond
// (no sync: a process crash does not lose them) and made durable at most
// every Options.AckInterval and at Close; a record acknowledged there is
// never replayed, and a segment whose records are all acknowledged is
// deleted, whatever older records still wait. A crash forgets at most the
// acks not yet written: those records are replayed (at-least-once).
func (l *Log) Ack(id uint64) error {
	return l.ack(id, 0, 0, true)
}

// AckRange records that items [off, off+n) of record id are done with
// (delivered or given up on). A record's items are its frames, numbered
// from 0: the items of AppendItems in order (AppendItemsAt says where a
// call's items start), the frames of a Write, or the frames Replay found.
// When all of a record's items are done, the record is acknowledged as by
// Ack. Until then the ranges are written to the ack log as item entries,
// as promptly as whole acks, and Replay hands a partly acknowledged record
// out with its done items named, so a crash brings back only items not
// acknowledged (or acknowledged within the last millisecond or so).
// Ranges may overlap, repeat and come in any order; a range past the
// record's item count is an error. A recovered record whose count is not
// known (see Stats.Uncounted) takes any range: it is acknowledged when
// Replay has counted its items and finds them all done. Acking a record
// acknowledged already (whole) is not an error.
func (l *Log) AckRange(id uint64, off, n int) error {
	if off < 0 || n <= 0 || uint64(off)+uint64(n) > 1<<32-1 {
		return fmt.Errorf("wal: AckRange(%d, %d, %d): not a range of items", id, off, n)
	}
	return l.ack(id, off, n, false)
}

// ack acknowledges items [off, off+n) of record id, or all of them.
func (l *Log) ack(id uint64, off, n int, whole bool) error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	if id == 0 || id > l.issued.Load() {
		return fmt.Errorf("wal: ack of record %d, which was never issued (last %d)", id, l.issued.Load())
	}
	l.amu.Lock()
	s := l.segmentOf(id)
	if s == nil {
		l.amu.Unlock()
		return nil // acknowledged (and its segment deleted), or lost and counted
	}
	r := &s.recs[id-s.firstID]
	if r.left == 0 {
		l.amu.Unlock()
		return nil
	}
	if !whole {
		if r.left != itemsUnknown {
			count := uint64(r.left)
			if set := l.partial.of(id); set != nil {
				count += set.size()
			}
			if uint64(off)+uint64(n) > count {
				l.amu.Unlock()
				return fmt.Errorf("wal: AckRange(%d, %d, %d): the record holds %d items", id, off, n, count)
			}
		}
		added := l.partial.add(id, off, n)
		if added == 0 {
			l.amu.Unlock()
			return nil
		}
		if r.left != itemsUnknown {
			r.left -= uint32(added)
			l.pending -= uint64(added)
		}
		if r.left != 0 {
			l.freshItems = appendItemsDone(l.freshItems, id, off, n)
			l.amu.Unlock()
			l.kickAckWriter()
			return nil
		}
	}
	l.ackedLocked(s, id, r)
	l.amu.Unlock()
	l.kickAckWriter()
	return nil
}

// ackedLocked marks record id of segment s acknowledged. Caller holds amu.
func (l *Log) ackedLocked(s *segment, id uint64, r *recState) {
	if r.left == itemsUnknown {
		l.uncounted--
	} else {
		l.pending -= uint64(r.left)
	}
	r.left = 0
	s.live--
	l.liveBytes -= recordSize(int(r.stored))
	l.partial.drop(id)
	l.acked.add(id, id)
	l.fresh.add(id, id)
}

// appendItemsDone appends an item ack to list, extending the last entry
// when it continues it (one batch's span after the previous one's).
func appendItemsDone(list []itemsDone, id uint64, off, n int) []itemsDone {
	if k := len(list) - 1; k >= 0 && list[k].id == id && int(list[k].off)+int(list[k].n) == off {
		list[k].n += uint32(n)
		return list
	}
	return append(list, itemsDone{id, uint32(off), uint32(n)})
}

// segmentOf returns the segment in asegs holding record id, or nil.
// Caller holds amu.
func (l *Log) segmentOf(id uint64) *segment {
	i := sort.Search(len(l.asegs), func(i int) bool { return l.asegs[i].firstID > id }) - 1
	if i < 0 {
		return nil
	}
	s := l.asegs[i]
	if id-s.firstID >= uint64(len(s.recs)) {
		return nil
	}
	return s
}

// kickAckWriter tells ackLoop there is something to write (never blocks:
// one pending kick is enough).
func (l *Log) kickAckWriter() {
	select {
	case l.ackKick <- struct{}{}:
	default:
	}
}

// Checkpoint writes the acknowledgements now and deletes the segments whose
// records are all acknowledged, instead of waiting for the background
// writer.
func (l *Log) Checkpoint() error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	// Two flushes: a segment freed by the first is deleted after the
	// second (see flushAcks).
	if err := l.flushAcks(true); err != nil {
		return err
	}
	return l.flushAcks(true)
}

// WriteAcks writes the acknowledgements made so far (Ack, AckRange) to the
// ack log now, without a sync, on the caller's goroutine: once it returns,
// a process crash (SIGKILL) forgets none of them; a machine crash may
// forget those made since the last durable flush (at most AckInterval
// ago). Without it they are written within ackWriteDelay anyway. A caller
// that acknowledges a delivered batch calls it once for the batch, so that
// after a crash only batches still being delivered come back. Concurrent
// calls share writes.
func (l *Log) WriteAcks() error {
	if l.isClosed.Load() {
		return ErrClosed
	}
	if err := l.flushAcks(false); err != nil {
		return err
	}
	select {
	case l.syncKick <- struct{}{}:
	default:
	}
	return nil
}

// ackWriteDelay is the least time between two writes of fresh
// acknowledgements to the ack log (without a sync). It bounds what a
// process crash forgets: an acknowledgement older than this is in the page
// cache, which a SIGKILL does not lose. AckInterval bounds it for a crash
// of the machine.
const ackWriteDelay = time.Millisecond

// ackLoop writes fresh acknowledgements to the ack log within
// ackWriteDelay (a write, no sync), so a process crash forgets at most a
// millisecond of them, and has syncLoop make them durable.
func (l *Log) ackLoop() {
	defer l.done.Done()
	for {
		select {
		case <-l.stop:
			return
		case <-l.ackKick:
		}
		if err := l.flushAcks(false); err != nil {
			l.log.Error("wal: writing the ack log failed", "err", err)
		}
		select {
		case l.syncKick <- struct{}{}:
		default:
		}
		// Coalesce: the acks of the next millisecond go in one write.
		pause := time.NewTimer(ackWriteDelay)
		select {
		case <-l.stop:
			pause.Stop()
			return
		case <-pause.C:
		}
	}
}

// syncLoop runs a durable flush at most once per AckInterval while there
// are acknowledgements to sync or segments to delete, so that acks from a
// fast Send path cost one fdatasync per interval rather than one each. It
// is a goroutine of its own so that a slow fdatasync (the disk busy with
// the segments' group commits) never delays the writes of ackLoop.
func (l *Log) syncLoop() {
	defer l.done.Done()
	wait := time.NewTimer(time.Hour)
	wait.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.syncKick:
		}
		wait.Reset(l.opts.AckInterval)
		select {
		case <-l.stop:
			wait.Stop()
			return
		case <-wait.C:
		}
		if err := l.flushAcks(true); err != nil {
			l.log.Error("wal: writing the ack log failed", "err", err)
		}
		l.amu.Lock()
		again := len(l.doomed) > 0 // deleted by the next durable flush
		l.amu.Unlock()
		if again {
			select {
			case l.syncKick <- struct{}{}:
			default:
			}
		}
	}
}

// flushAcks appends the acknowledgements made since the last flush and the
// written mark to the ack log, durably, then deletes the segments that were
// fully acknowledged as of the previous flush. Deleting one flush late
// means a segment is only ever deleted on the strength of acks with a later
// flush after them in the file, so damage to the file's last entries (a
// torn write, or a bit flip there) never concerns a deleted segment; see
// doc.go. (The acks that freed a segment were taken, and written, under
// fmu before the flush that found it free wrote its own entries.) The ack
// log is rewritten (compacted) instead of appended to when it has grown to
// several times the state it holds.
//
// Without sync it only writes the fresh acknowledgements (no fdatasync, no
// deletion, no compaction): they are in the page cache, safe from a process
// crash, and the next durable flush syncs them with its own.
func (l *Log) flushAcks(sync bool) error {
	if !sync {
		l.fmu.Lock()
		defer l.fmu.Unlock()
		l.amu.Lock()
		delta, items := l.takeFreshLocked()
		l.amu.Unlock()
		if (len(delta) == 0 && len(items) == 0) || l.ackLog.torn {
			l.restoreFresh(delta, items) // a torn log is rewritten by the next durable flush
			return nil
		}
		if err := l.ackLog.write(ackEntries(delta, items, nil)); err != nil {
			l.restoreFresh(delta, items)
			return err
		}
		return nil
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	l.fmu.Lock()
	written := l.synced.Load()
	l.amu.Lock()
	delta, items := l.takeFreshLocked()
	due := l.doomed
	l.doomed = nil
	keep := l.asegs[:0]
	for _, s := range l.asegs {
		if s.sealed && s.live == 0 {
			l.doomed = append(l.doomed, s)
			l.liveBytes -= segmentHeaderSize
			continue
		}
		keep = append(keep, s)
	}
	clear(l.asegs[len(keep):])
	l.asegs = keep
	state := len(l.acked.spans) + l.partial.ranges
	compact := l.ackLog.torn || (l.ackLog.size > ackCompactMin && l.ackLog.size > 4*int64(ackHeaderSize+(state+1)*ackEntrySize))
	var full []span
	var fullItems []itemsDone
	if compact {
		full = l.acked.clone()
		fullItems = l.partial.entries()
	}
	mark := l.acked.mark()
	l.amu.Unlock()
	if len(delta) == 0 && len(items) == 0 && written <= l.flushedW && len(due) == 0 && len(l.doomed) == 0 && !compact {
		l.fmu.Unlock()
		return nil
	}
	var err error
	if compact {
		err = l.ackLog.rewrite(full, fullItems, written) // synced
		// The rewritten file is one write: nothing is deleted on its
		// strength until a flush follows it.
		l.amu.Lock()
		l.doomed = append(due, l.doomed...)
		l.amu.Unlock()
		due = nil
	} else {
		err = l.ackLog.write(ackEntries(delta, items, &written))
	}
	f := l.ackLog.f // only a durable flush replaces it, and smu is held
	l.fmu.Unlock()
	if err == nil && !compact {
		if err = fdatasync(f); err != nil {
			err = fmt.Errorf("fdatasync %s: %w", ackFileName, err)
		}
	}
	if err != nil {
		l.restoreFresh(delta, items) // written next time
		l.amu.Lock()
		l.doomed = append(due, l.doomed...)
		l.amu.Unlock()
		return err
	}
	l.flushedW = max(l.flushedW, written)
	l.persisted.Store(max(l.persisted.Load(), mark))
	return l.deleteSegments(due)
}

// takeFreshLocked takes the acknowledgements not yet written: whole
// records, and item acks of records not acknowledged whole since (the
// whole entry supersedes them). Caller holds amu.
func (l *Log) takeFreshLocked() ([]span, []itemsDone) {
	delta := l.fresh.take()
	items := l.freshItems[:0:0]
	for _, d := range l.freshItems {
		if !l.acked.contains(d.id) {
			items = append(items, d)
		}
	}
	l.freshItems = l.freshItems[:0]
	return delta, items
}

// restoreFresh puts back acknowledgements a flush did not write.
func (l *Log) restoreFresh(delta []span, items []itemsDone) {
	l.amu.Lock()
	l.fresh.addAll(delta)
	l.freshItems = append(items, l.freshItems...)
	l.amu.Unlock()
}

// ackEntries encodes acknowledgements as ack log entries, ending with the
// written mark if written is not nil.
func ackEntries(delta []span, items []itemsDone, written *uint64) []byte {
	buf := make([]byte, 0, (len(delta)+len(items)+1)*ackEntrySize)
	for _, sp := range delta {
		buf = appendAckEntry(buf, ackKindAcked, sp.lo, sp.hi)
	}
	for _, d := range items {
		buf = appendItemsEntry(buf, d.id, d.off, d.n)
	}
	if written != nil {
		buf = appendAckEntry(buf, ackKindWritten, 0, *written)
	}
	return buf
}

// deleteSegments removes the files of segments whose records are all
// acknowledged durably.
func (l *Log) deleteSegments(doomed []*segment) error {
	if len(doomed) == 0 {
		return nil
	}
	gone := make(map[*segment]bool, len(doomed))
	for _, s := range doomed {
		gone[s] = true
	}
	l.mu.Lock()
	keep := l.segs[:0]
	for _, s := range l.segs {
		if gone[s] {
			l.bytes -= s.size
			continue
		}
		keep = append(keep, s)
	}
	clear(l.segs[len(keep):])
	l.segs = keep
	l.mu.Unlock()
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
		DeadLetters: int(l.dead.count.Load()),
		DeadBytes:   l.dead.bytes.Load(),
		DeadCorrupt: l.dead.corrupt.Load(),
	}
	l.mu.Lock()
	st.Segments = len(l.segs)
	l.mu.Unlock()
	l.amu.Lock()
	st.AckMark = l.acked.mark()
	st.Bytes = l.liveBytes
	st.ItemsPending = l.pending
	st.Uncounted = l.uncounted
	if t, ok := l.oldestPendingLocked(); ok {
		st.OldestPending = time.Unix(0, t)
	}
	l.amu.Unlock()
	return st
}

// oldestPendingLocked returns the timestamp of the oldest unacknowledged
// record. Each segment's head only moves forward past acknowledged
// records, so the scans add up to one pass over the records. Caller holds
// amu.
func (l *Log) oldestPendingLocked() (int64, bool) {
	for _, s := range l.asegs {
		if s.live == 0 {
			continue
		}
		for s.head < len(s.recs) && s.recs[s.head].left == 0 {
			s.head++
		}
		if s.head < len(s.recs) {
			return s.recs[s.head].time, true
		}
	}
	return 0, false
}

// Dir returns the directory the log lives in.
func (l *Log) Dir() string { return l.dir }

// Close commits what the group commit holds, makes everything written
// durable, writes the ack log, deletes the segments all acknowledged,
// unmaps and closes the files and releases the lock. Later calls return
// ErrClosed. A Write racing Close may get ErrClosed from its wait for
// durability; its record is then on disk nonetheless.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.Unlock()
	l.commit.close() // writes and syncs what it holds, then exits
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.isClosed.Store(true)
	l.prepared.Broadcast() // a write waiting for the spare returns ErrClosed
	l.mu.Unlock()
	close(l.stop)
	l.done.Wait()

	var errs []error
	l.mu.Lock()
	broken := l.broken
	l.mu.Unlock()
	if broken == nil {
		// The committer has exited: no one else syncs.
		if target, err := l.syncNow(); err != nil {
			errs = append(errs, err)
		} else if target > l.synced.Load() {
			l.synced.Store(target)
		}
	}
	l.mu.Lock()
	for _, s := range l.unsynced {
		s.f.Close()
	}
	l.unsynced = nil
	if s := l.active; s != nil {
		s.f.Close()
		l.active = nil
	}
	if l.spare != nil {
		if err := l.dropSpareLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	l.mu.Unlock()
	if broken == nil {
		// The active segment is done with too: seal it, so that if all its
		// records are acknowledged it goes like the others. Two flushes:
		// what the first frees, the second deletes.
		l.amu.Lock()
		for _, s := range l.asegs {
			s.sealed = true
		}
		l.amu.Unlock()
		for range 2 {
			if err := l.flushAcks(true); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	l.releaseOpenFiles()
	return errors.Join(errs...)
}
