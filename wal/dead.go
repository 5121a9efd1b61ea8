package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// The dead-letter log: batches the queue gave up on (retries exhausted, or
// a permanent failure), kept in the subdirectory dlq/ of the WAL directory
// until someone requeues or purges them. See doc.go for the format and its
// crash story. Dead letters are rare, so each is its own small file written
// whole and renamed into place: a dead letter exists completely or not at
// all, and purging one is an unlink after a tombstone.

const (
	deadDirName     = "dlq"
	deadMetaVersion = 1
	// deadMetaKeyed is the metadata version with flags and item keys
	// (written only for a dead letter that has either).
	deadMetaKeyed  = 2
	deadFlagParked = 1 << 0
	// maxDeadReason bounds the reason kept with a dead letter (longer
	// error texts are cut), maxDeadRecords the record ids.
	maxDeadReason  = 4 << 10
	maxDeadRecords = 1 << 16
	// maxDeadKeys bounds the item keys of one dead letter.
	maxDeadKeys = 1 << 16
	// deadMetaMax bounds the encoded metadata in front of the items, so a
	// reader's limit is the record limit plus this.
	deadMetaMax = 1 + 3*binary.MaxVarintLen64 + maxDeadReason + (1+maxDeadRecords)*binary.MaxVarintLen64 +
		binary.MaxVarintLen64 + (1+maxDeadKeys)*binary.MaxVarintLen64
)

// DeadMeta is what is kept with a dead letter besides its items.
type DeadMeta struct {
	// Time the batch was given up on; the zero Time means now.
	Time time.Time
	// Reason is the last error's text (cut to 4 KiB, at a UTF-8 boundary).
	Reason string
	// Records are the main-log record ids the items came from (may be
	// empty; at most 65,536).
	Records []uint64
	// Attempts is how many times Send was tried.
	Attempts int
	// Keys is the key of each item of a keyed batch, in item order (empty
	// for unkeyed items; otherwise exactly one per item, at most 65,536).
	// A queue that parks keys needs them to hold back the later items of
	// those keys, and to deliver the items again in their key's order.
	Keys []uint64
	// Parked is set for items that did not fail themselves: they were
	// parked behind an earlier dead letter of their key.
	Parked bool
}

// DeadLetter describes one dead letter on disk.
type DeadLetter struct {
	ID uint64 // never reused within a WAL directory
	DeadMeta
	Items    int   // items in its payload (AppendFrame frames)
	Bytes    int   // payload bytes (framed items, uncompressed)
	FileSize int64 // bytes on disk
	// Damage is set, by the listings only, for a dead-letter file that
	// does not verify; its other fields but ID and FileSize are then zero.
	Damage *Damage
}

// appendDeadMeta encodes m in front of a dead letter's items:
//
//	[0]      version (1)
//	varint   time, Unix nanoseconds (0: the zero Time)
//	uvarint  attempts
//	uvarint  reason length, then the reason's bytes
//	uvarint  record id count, then each id as a uvarint
//
// and, in version 2 (written only when m has Keys or is Parked, so that
// other dead letters stay readable by older releases):
//
//	uvarint  flags (deadFlagParked)
//	uvarint  key count, then each key as a uvarint
func appendDeadMeta(dst []byte, m DeadMeta) []byte {
	keyed := len(m.Keys) > 0 || m.Parked
	if keyed {
		dst = append(dst, deadMetaKeyed)
	} else {
		dst = append(dst, deadMetaVersion)
	}
	var t int64
	if !m.Time.IsZero() {
		t = m.Time.UnixNano()
	}
	dst = binary.AppendVarint(dst, t)
	dst = binary.AppendUvarint(dst, uint64(max(m.Attempts, 0)))
	dst = binary.AppendUvarint(dst, uint64(len(m.Reason)))
	dst = append(dst, m.Reason...)
	dst = binary.AppendUvarint(dst, uint64(len(m.Records)))
	for _, id := range m.Records {
		dst = binary.AppendUvarint(dst, id)
	}
	if keyed {
		var flags uint64
		if m.Parked {
			flags |= deadFlagParked
		}
		dst = binary.AppendUvarint(dst, flags)
		dst = binary.AppendUvarint(dst, uint64(len(m.Keys)))
		for _, k := range m.Keys {
			dst = binary.AppendUvarint(dst, k)
		}
	}
	return dst
}

// uvarintList decodes a count then that many uvarints from b[off:], the
// metadata's lists of record ids and of keys, and returns them (nil when
// the count is 0) with the offset after them. Each value takes at least one
// byte, so a count beyond max or beyond the bytes left is damage, refused
// before the slice is made; what names the damaged part (countName or
// itemName; "" if none).
func uvarintList(b []byte, off int, max uint64, countName, itemName string) (list []uint64, next int, what string) {
	n, k := binary.Uvarint(b[off:])
	if k <= 0 || n > max || n > uint64(len(b)-off-k) {
		return nil, off, countName
	}
	off += k
	if n == 0 {
		return nil, off, ""
	}
	list = make([]uint64, n)
	for i := range list {
		v, k := binary.Uvarint(b[off:])
		if k <= 0 {
			return nil, off, itemName
		}
		list[i] = v
		off += k
	}
	return list, off, ""
}

// parseDeadMeta decodes the metadata at the start of a dead letter's raw
// payload and returns it with the items that follow (aliasing b). Every
// length is checked against the bytes present before anything is
// allocated; bad input is ErrCorrupt, never a panic.
func parseDeadMeta(b []byte) (DeadMeta, []byte, error) {
	var m DeadMeta
	bad := func(what string) (DeadMeta, []byte, error) {
		return DeadMeta{}, nil, fmt.Errorf("%w: dead-letter metadata: %s", ErrCorrupt, what)
	}
	if len(b) == 0 {
		return bad("empty")
	}
	version := b[0]
	if version != deadMetaVersion && version != deadMetaKeyed {
		return bad(fmt.Sprintf("version %d", b[0]))
	}
	off := 1
	t, k := binary.Varint(b[off:])
	if k <= 0 {
		return bad("time")
	}
	off += k
	if t != 0 {
		m.Time = time.Unix(0, t)
	}
	att, k := binary.Uvarint(b[off:])
	if k <= 0 || att > 1<<31-1 {
		return bad("attempts")
	}
	off += k
	m.Attempts = int(att)
	n, k := binary.Uvarint(b[off:])
	if k <= 0 || n > maxDeadReason || n > uint64(len(b)-off-k) {
		return bad("reason length")
	}
	off += k
	m.Reason = string(b[off : off+int(n)])
	off += int(n)
	var what string
	if m.Records, off, what = uvarintList(b, off, maxDeadRecords, "record count", "record id"); what != "" {
		return bad(what)
	}
	if version == deadMetaKeyed {
		flags, k := binary.Uvarint(b[off:])
		if k <= 0 || flags&^deadFlagParked != 0 {
			return bad("flags")
		}
		off += k
		m.Parked = flags&deadFlagParked != 0
		if m.Keys, off, what = uvarintList(b, off, maxDeadKeys, "key count", "key"); what != "" {
			return bad(what)
		}
	}
	return m, b[off:], nil
}

// cutReason cuts s to at most maxDeadReason bytes without splitting a rune.
func cutReason(s string) string {
	if len(s) <= maxDeadReason {
		return s
	}
	s = s[:maxDeadReason]
	for len(s) > 0 && !utf8.ValidString(s[len(s)-min(len(s), utf8.UTFMax):]) {
		s = s[:len(s)-1]
	}
	return strings.ToValidUTF8(s, "")
}

// deadLog is an open Log's dead-letter state.
type deadLog struct {
	dir string // <wal dir>/dlq

	// mu serializes writes to the directory and its ack log (DeadLetter,
	// purges); readers take it only to copy the index. Lock order: mu
	// before Log.mu (DeadLetter reserves bytes under Log.mu).
	mu     sync.Mutex
	closed bool
	ack    *ackLog // nil until the directory exists
	next   uint64  // the next id
	purged spanSet // every id purged, or lost and counted
	live   map[uint64]int64

	count   atomic.Int64 // live dead letters
	bytes   atomic.Int64 // their file sizes (and reservations in flight), for Stats and MaxBytes
	corrupt atomic.Uint64
}

func deadFileName(id uint64) string { return segmentName(id) }

func (d *deadLog) close() {
	d.mu.Lock()
	d.closed = true
	d.ack.close()
	d.mu.Unlock()
}

// fullErr marks a full disk as ErrFull (keeping the cause).
func fullErr(err error) error {
	if err != nil && (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) && !errors.Is(err, ErrFull) {
		return fmt.Errorf("%w: %w", ErrFull, err)
	}
	return err
}

// DeadLetter stores payload — items framed with AppendFrame — as a dead
// letter with meta, durably (the file, its directory entry and the ack
// log's written mark are fdatasync'd before it returns), and returns its
// id. Ids start at 1 and are never reused in the directory.
//
// The payload is compressed like a record. ErrTooLarge: payload over
// MaxRecord, or more than 65,536 record ids or keys (Keys needs one per
// item, or none). ErrFull: the disk is full,
// or the dead letter would take segments plus dead letters past
// Options.MaxBytes (one budget for the whole directory). On any error
// nothing was stored, except when the file is complete but a directory
// sync failed; then it may survive as a dead letter (a duplicate, never a
// loss, if the caller keeps the items).
//
// The caller acknowledges the main-log records the items came from only
// after DeadLetter returns: a crash in between replays them and keeps the
// dead letter too (a duplicate, never a loss).
func (l *Log) DeadLetter(payload []byte, meta DeadMeta) (uint64, error) {
	ids, err := l.DeadLetterGroup([]DeadPart{{Payload: payload, Meta: meta}})
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// DeadPart is one dead letter of a group (DeadLetterGroup).
type DeadPart struct {
	Payload []byte // items framed with AppendFrame
	Meta    DeadMeta
}

// DeadLetterGroup stores parts as consecutive dead letters, all of them or
// none: a batch too large for one record is kept as several dead letters,
// and a full disk part way through must not leave some of its items
// dead-lettered while the caller keeps them all for the main log's replay
// (or hands them all to OnDrop). It returns their ids, in order. Each part
// is checked as DeadLetter checks its payload and meta, before anything is
// written; the errors, and the one exception to "none", are DeadLetter's.
//
// The files are written one at a time under .tmp names and fdatasync'd
// (only one file's bytes are held at once), each counted against MaxBytes
// as it is written; only once every one is on disk are they renamed into
// place, the directory fsync'd once, and the written mark appended once.
// A failure before the renames deletes the .tmp files and returns with
// nothing stored and no id used. A crash during the renames (a window of
// renames, not of writes) may keep some of the group; the caller holds
// all of its items still, so that is a duplicate, never a loss — as with
// a crash between DeadLetter and the caller's acknowledgement.
func (l *Log) DeadLetterGroup(parts []DeadPart) ([]uint64, error) {
	if l.isClosed.Load() {
		return nil, ErrClosed
	}
	if len(parts) == 0 {
		return nil, nil
	}
	for i := range parts {
		if err := checkDeadPart(parts[i].Payload, parts[i].Meta, l.opts.MaxRecord); err != nil {
			return nil, err
		}
	}
	d := &l.dead
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, ErrClosed
	}
	if err := d.ensureDir(l.dir); err != nil {
		return nil, fullErr(err)
	}
	first := d.next
	sizes := make([]int64, 0, len(parts))
	var reserved int64
	// abort deletes the .tmp files written and gives their bytes back.
	abort := func(err error) ([]uint64, error) {
		for i := range sizes {
			os.Remove(d.tmpPath(first + uint64(i)))
		}
		d.bytes.Add(-reserved)
		return nil, fullErr(err)
	}
	for i := range parts {
		id := first + uint64(i)
		file := l.deadFile(id, parts[i].Payload, parts[i].Meta)
		size := int64(len(file))
		if err := l.reserveDeadBytes(size); err != nil {
			return abort(err)
		}
		reserved += size
		sizes = append(sizes, size)
		if err := writeFileSync(d.tmpPath(id), file); err != nil {
			return abort(fmt.Errorf("wal: dead letter %d: %w", id, err))
		}
	}
	if err := l.opts.inject("dlq-group-written"); err != nil {
		return abort(err)
	}
	placed := 0
	var err error
	for i := range parts {
		id := first + uint64(i)
		if err = os.Rename(d.tmpPath(id), filepath.Join(d.dir, deadFileName(id))); err != nil {
			err = fmt.Errorf("wal: dead letter %d: %w", id, err)
			break
		}
		placed++
	}
	if placed < len(parts) {
		for i := placed; i < len(parts); i++ {
			os.Remove(d.tmpPath(first + uint64(i)))
			d.bytes.Add(-sizes[i])
		}
		d.takeBack(first, sizes[:placed])
		return nil, fullErr(err)
	}
	// Every file is in place: the ids are used whatever happens next.
	d.record(first, sizes)
	if err := syncDir(d.dir); err != nil {
		return nil, fullErr(fmt.Errorf("wal: dead letters %d-%d: %w", first, first+uint64(len(parts))-1, err))
	}
	if err := d.appendAck(appendAckEntry(nil, ackKindWritten, 0, d.next-1)); err != nil {
		// The dead letters are durable; only the written mark is not,
		// which matters to loss accounting alone (the next write rewrites
		// it).
		l.log.Error("wal: writing the dead-letter ack log failed", "err", err)
	}
	ids := make([]uint64, len(parts))
	for i := range ids {
		ids[i] = first + uint64(i)
	}
	return ids, nil
}

// checkDeadPart refuses a dead letter DeadLetter would not store.
func checkDeadPart(payload []byte, meta DeadMeta, maxRecord int) error {
	if len(payload) > maxRecord {
		return fmt.Errorf("%w: dead letter of %d bytes, the limit is %d", ErrTooLarge, len(payload), maxRecord)
	}
	if len(meta.Records) > maxDeadRecords {
		return fmt.Errorf("%w: dead letter with %d record ids, the limit is %d", ErrTooLarge, len(meta.Records), maxDeadRecords)
	}
	if len(meta.Keys) > maxDeadKeys {
		return fmt.Errorf("%w: dead letter with %d keys, the limit is %d", ErrTooLarge, len(meta.Keys), maxDeadKeys)
	}
	items := 0
	if err := ForEachItem(payload, func([]byte) error { items++; return nil }); err != nil {
		return fmt.Errorf("wal: DeadLetter: the payload is not a sequence of AppendFrame frames (%v)", err)
	}
	if len(meta.Keys) > 0 && len(meta.Keys) != items {
		return fmt.Errorf("wal: DeadLetter: %d keys for %d items (one per item, or none)", len(meta.Keys), items)
	}
	return nil
}

// deadFile encodes dead letter id: a segment header and one record holding
// meta and payload, compressed like a record.
func (l *Log) deadFile(id uint64, payload []byte, meta DeadMeta) []byte {
	if meta.Time.IsZero() {
		meta.Time = time.Now()
	}
	meta.Reason = cutReason(meta.Reason)
	raw := appendDeadMeta(make([]byte, 0, 64+len(meta.Reason)+len(payload)), meta)
	raw = append(raw, payload...)
	z := l.zpool.get()
	defer l.zpool.put(z)
	stored, codec := z.compress(raw)
	size := segmentHeaderSize + recordSize(len(stored)+l.opts.keys.overhead())
	file := make([]byte, size)
	hdr := l.opts.keys.header(segmentHeader{codec: codec, firstID: id, size: uint64(size)})
	putSegmentHeader(file, hdr)
	encodeSealedRecord(file[segmentHeaderSize:], recordHeader{id: id, time: time.Now().UnixNano(), codec: codec, kind: kindData}, stored, l.opts.keys.sealer(), hdr.framing())
	return file
}

// record counts the dead letters first, first+1, ... of sizes (already
// reserved) as live. Caller holds mu.
func (d *deadLog) record(first uint64, sizes []int64) {
	for i, size := range sizes {
		d.live[first+uint64(i)] = size
	}
	d.next = first + uint64(len(sizes))
	d.count.Add(int64(len(sizes)))
}

// takeBack deletes the dead letters first, first+1, ... of sizes, renamed
// into place by a group that failed before all of its files were. Each one
// deleted gives its bytes back; one that will not go is a dead letter (the
// group's caller keeps its items: a duplicate, never a loss), and the ids
// before it that did go are tombstoned, so that the next Open does not
// count them lost. Caller holds mu.
func (d *deadLog) takeBack(first uint64, sizes []int64) {
	last := -1 // the last file still in place
	for i := range sizes {
		if err := os.Remove(filepath.Join(d.dir, deadFileName(first+uint64(i)))); err != nil && !errors.Is(err, os.ErrNotExist) {
			last = i
		}
	}
	syncErr := syncDir(d.dir)
	if last < 0 && syncErr == nil {
		for _, size := range sizes {
			d.bytes.Add(-size)
		}
		return // nothing stored, no id used
	}
	if syncErr != nil {
		last = len(sizes) - 1 // the deletions may not last: count every id used
	}
	var entries []byte
	old := d.purged
	d.purged = spanSet{spans: old.clone()}
	for i := 0; i <= last; i++ {
		id := first + uint64(i)
		if _, err := os.Lstat(filepath.Join(d.dir, deadFileName(id))); err == nil {
			d.live[id] = sizes[i]
			d.count.Add(1)
			continue
		}
		d.bytes.Add(-sizes[i])
		d.purged.add(id, id)
		entries = appendAckEntry(entries, ackKindAcked, id, id)
	}
	for i := last + 1; i < len(sizes); i++ {
		d.bytes.Add(-sizes[i])
	}
	d.next = first + uint64(last) + 1
	if err := d.appendAck(appendAckEntry(entries, ackKindWritten, 0, d.next-1)); err != nil {
		// The next write rewrites the ack log whole, from the state
		// (tombstones included).
		d.ack.torn = true
	}
}

func (d *deadLog) tmpPath(id uint64) string {
	return filepath.Join(d.dir, deadFileName(id)+tmpSuffix)
}

// reserveDeadBytes counts n more dead-letter bytes, refusing them with
// ErrFull if segments and dead letters would pass Options.MaxBytes.
func (l *Log) reserveDeadBytes(n int64) error {
	if l.opts.MaxBytes <= 0 {
		l.dead.bytes.Add(n)
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		used := l.bytes + l.dead.bytes.Load()
		if used+n <= l.opts.MaxBytes {
			l.dead.bytes.Add(n)
			return nil
		}
		// The spare segment is only there to make the next roll cheap: a
		// dead letter, which keeps a failed batch out of the way of the
		// next New, comes first. Wait for a spare being prepared (its
		// size is reserved meanwhile), then give its room up.
		if l.preparing && !l.closed {
			l.prepared.Wait()
			continue
		}
		if l.spare == nil || used-l.opts.SegmentSize+n > l.opts.MaxBytes {
			return fmt.Errorf("%w: MaxBytes %d reached (%d bytes of segments and dead letters)", ErrFull, l.opts.MaxBytes, used)
		}
		if err := l.dropSpareLocked(); err != nil {
			l.log.Debug("wal: removing the spare segment for a dead letter", "err", err)
		}
	}
}

// ensureDir creates dlq/ and its ack log on first use. Caller holds mu.
func (d *deadLog) ensureDir(walDir string) error {
	if d.ack != nil {
		return nil
	}
	if err := os.Mkdir(d.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("wal: %w", err)
	}
	if err := syncDir(walDir); err != nil {
		return fmt.Errorf("wal: %w", err)
	}
	a, err := rewriteAckLog(d.dir, 1, d.purged.spans, nil, d.next-1)
	if err != nil {
		return fmt.Errorf("wal: dead-letter ack log: %w", err)
	}
	d.ack = a
	return nil
}

// appendAck appends entries to the dead-letter ack log durably, or
// rewrites it whole (with the current state, which must already include
// what the entries say) after a failed write or when it has grown to
// several times its state. Caller holds mu and has made the directory.
func (d *deadLog) appendAck(entries []byte) error {
	a := d.ack
	if a.torn || (a.size > ackCompactMin && a.size > 4*int64(ackHeaderSize+(len(d.purged.spans)+1)*ackEntrySize)) {
		return a.rewrite(d.purged.spans, nil, d.next-1)
	}
	return a.append(entries)
}

// purgeLocked deletes the dead letters ids (all live), crash-safely: the
// tombstones are durable in the ack log, with one more flush after them
// (as for segments, see doc.go), before any file goes. Caller holds mu.
func (d *deadLog) purgeLocked(ids []uint64) error {
	var set spanSet
	for _, id := range ids {
		set.add(id, id)
	}
	old := d.purged
	d.purged = spanSet{spans: old.clone()}
	d.purged.addAll(set.spans)
	var buf []byte
	for _, sp := range set.spans {
		buf = appendAckEntry(buf, ackKindAcked, sp.lo, sp.hi)
	}
	err := d.appendAck(buf)
	if err == nil {
		err = d.appendAck(appendAckEntry(nil, ackKindWritten, 0, d.next-1))
	}
	if err != nil {
		if d.ack.torn {
			// A partial write may hold some tombstones; the state keeps
			// them all, so the rewrite that follows is right either way.
			return fmt.Errorf("wal: purging dead letters: %w", err)
		}
		d.purged = old
		return fmt.Errorf("wal: purging dead letters: %w", err)
	}
	var firstErr error
	for _, id := range ids {
		if err := os.Remove(filepath.Join(d.dir, deadFileName(id))); err != nil && !errors.Is(err, os.ErrNotExist) && firstErr == nil {
			firstErr = err
		}
		d.bytes.Add(-d.live[id])
		d.count.Add(-1)
		delete(d.live, id)
	}
	if err := syncDir(d.dir); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		// The tombstones stand: the next Open deletes what is left.
		return fmt.Errorf("wal: purging dead letters: %w", firstErr)
	}
	return nil
}

// pick returns the live ids among ids (all live ids if ids is empty), in
// order, and the ids asked for that are not live. Caller holds mu.
func (d *deadLog) pick(ids []uint64) (found, missing []uint64) {
	if len(ids) == 0 {
		for id := range d.live {
			found = append(found, id)
		}
		slices.Sort(found)
		return found, nil
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if _, ok := d.live[id]; ok {
			found = append(found, id)
		} else {
			missing = append(missing, id)
		}
	}
	return found, missing
}

func notFound(missing []uint64) error {
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %v", ErrNotFound, missing)
}

// DeadLetters lists the dead letters on disk in id order (reading each
// file; a file damaged since Open is listed with its Damage).
func (l *Log) DeadLetters() ([]DeadLetter, error) {
	if l.isClosed.Load() {
		return nil, ErrClosed
	}
	d := &l.dead
	d.mu.Lock()
	ids, _ := d.pick(nil)
	d.mu.Unlock()
	out := make([]DeadLetter, 0, len(ids))
	for _, id := range ids {
		dl, _, err := readDeadFile(d.dir, id, l.deadReadLimit(), l.opts.keys)
		if errors.Is(err, os.ErrNotExist) && !d.isLive(id) {
			continue // purged meanwhile
		}
		if err != nil && dl.Damage == nil {
			return out, err
		}
		out = append(out, dl)
	}
	return out, nil
}

func (d *deadLog) isLive(id uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.live[id]
	return ok
}

func (l *Log) deadReadLimit() int { return l.opts.readLimit() + deadMetaMax }

// ReadDeadLetter returns dead letter id and its payload (items framed with
// AppendFrame; split them with ForEachItem). ErrNotFound if there is no
// such dead letter, ErrCorrupt if its file does not verify.
func (l *Log) ReadDeadLetter(id uint64) (DeadLetter, []byte, error) {
	if l.isClosed.Load() {
		return DeadLetter{}, nil, ErrClosed
	}
	if !l.dead.isLive(id) {
		return DeadLetter{}, nil, notFound([]uint64{id})
	}
	dl, p, err := readDeadFile(l.dead.dir, id, l.deadReadLimit(), l.opts.keys)
	if errors.Is(err, os.ErrNotExist) {
		return DeadLetter{}, nil, notFound([]uint64{id})
	}
	return dl, p, err
}

// PurgeDeadLetters deletes the dead letters ids, or all of them if none is
// given, and returns how many it deleted. The deletion is crash-safe: a
// tombstone is durable in the dead-letter ack log before a file goes, so a
// crash leaves each dead letter either intact or gone for good. Ids that
// are not (or no longer) dead letters are reported with ErrNotFound after
// the others are purged.
func (l *Log) PurgeDeadLetters(ids ...uint64) (int, error) {
	if l.isClosed.Load() {
		return 0, ErrClosed
	}
	d := &l.dead
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	found, missing := d.pick(ids)
	if len(found) > 0 {
		if err := d.purgeLocked(found); err != nil {
			return 0, err
		}
	}
	return len(found), notFound(missing)
}

// RequeueDeadLetters hands the dead letters ids (all of them if ids is
// empty) to fn in id order, then purges those for which fn returned nil;
// it returns how many it purged. fn puts the items back where they will be
// delivered (the queue enqueues them), durably if they must survive a
// crash: it runs before the purge, so a crash in between leaves the items
// in both places — a duplicate, never a loss. fn runs without any lock of
// the Log held and may call it (Append, DeadLetter, ...); payload is valid
// only during the call. The first error fn returns stops the requeue
// (what was handed out before it is purged) and is returned. A dead letter
// purged concurrently is skipped; two concurrent requeues of one id may
// both hand it out.
func (l *Log) RequeueDeadLetters(ids []uint64, fn func(d DeadLetter, payload []byte) error) (int, error) {
	if l.isClosed.Load() {
		return 0, ErrClosed
	}
	d := &l.dead
	d.mu.Lock()
	found, missing := d.pick(ids)
	d.mu.Unlock()
	var done []uint64
	var fnErr error
	for _, id := range found {
		dl, p, err := readDeadFile(d.dir, id, l.deadReadLimit(), l.opts.keys)
		if errors.Is(err, os.ErrNotExist) && !d.isLive(id) {
			continue
		}
		if err != nil {
			if len(ids) == 0 && dl.Damage != nil {
				continue // all of them: a damaged one stays, listed, until purged
			}
			fnErr = err
			break
		}
		if err := fn(dl, p); err != nil {
			fnErr = err
			break
		}
		done = append(done, id)
	}
	if len(done) > 0 {
		if err := l.opts.inject("dlq-requeue-written"); err != nil {
			return 0, err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, errors.Join(fnErr, ErrClosed)
	}
	var still []uint64
	if len(done) > 0 {
		still, _ = d.pick(done) // less what was purged meanwhile
	}
	if len(still) > 0 {
		if err := d.purgeLocked(still); err != nil {
			return 0, errors.Join(fnErr, err)
		}
	}
	if fnErr != nil {
		return len(still), fnErr
	}
	return len(still), notFound(missing)
}

// scanDeadFile verifies a dead-letter file: a segment header naming id and
// exactly one data record. Anything after that record is damage (the
// record itself is kept), as is a first record of another kind.
func scanDeadFile(data []byte, id uint64, limit int) (sc segmentScan, first recordHeader, stored []byte, zero bool) {
	if allZero(data) {
		return sc, first, nil, true
	}
	var extra *Damage
	var extraID uint64
	sc, err := scanDeadSegment(data, id, limit, func(off int64, h recordHeader, s []byte) error {
		if h.kind != kindData || h.keyed || stored != nil {
			extra = &Damage{Offset: off, Reason: "a dead-letter file holds one data record; found another record"}
			extraID = h.id
			return errExtraRecord
		}
		first, stored = h, s
		return nil
	})
	if err != nil {
		// Stopped at the extra record, with the state as of before it.
		sc.damage, sc.afterRecs, sc.afterMax = extra, 1, extraID
	}
	return sc, first, stored, false
}

var errExtraRecord = errors.New("extra record")

// readDeadFile reads and verifies dead letter id in dir. A file that does
// not verify gives a DeadLetter with Damage set and an ErrCorrupt error;
// one encrypted under a key keys lacks, ErrKey (not damage).
func readDeadFile(dir string, id uint64, limit int, keys *keyring) (DeadLetter, []byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, deadFileName(id)))
	if err != nil {
		return DeadLetter{ID: id}, nil, fmt.Errorf("wal: dead letter %d: %w", id, err)
	}
	return decodeDeadFile(data, id, limit, keys)
}

// decodeDeadFile is readDeadFile on the file's bytes. It never panics and
// never allocates in proportion to a length field.
func decodeDeadFile(data []byte, id uint64, limit int, keys *keyring) (DeadLetter, []byte, error) {
	dl := DeadLetter{ID: id, FileSize: int64(len(data))}
	damaged := func(off int64, reason string) (DeadLetter, []byte, error) {
		dl.Damage = &Damage{Offset: off, Reason: reason}
		return dl, nil, fmt.Errorf("%w: dead letter %d: %s", ErrCorrupt, id, dl.Damage)
	}
	sc, h, stored, zero := scanDeadFile(data, id, limit)
	switch {
	case zero:
		return damaged(0, "file empty or all zeros")
	case stored == nil && sc.damage != nil:
		return damaged(sc.damage.Offset, sc.damage.Reason)
	case stored == nil:
		return damaged(segmentHeaderSize, "no record")
	}
	aead, err := keys.forHeader(sc.header) // an intact record implies an intact header
	if err != nil {
		return dl, nil, fmt.Errorf("wal: dead letter %d: %w", id, err)
	}
	rr := recordReader{limit: limit}
	raw, err := rr.payload(aead, &h, stored)
	if err != nil {
		return damaged(segmentHeaderSize, err.Error())
	}
	meta, items, err := parseDeadMeta(raw)
	if err != nil {
		return damaged(segmentHeaderSize, err.Error())
	}
	n := 0
	if err := ForEachItem(items, func([]byte) error { n++; return nil }); err != nil {
		return damaged(segmentHeaderSize, err.Error())
	}
	dl.DeadMeta, dl.Items, dl.Bytes = meta, n, len(items)
	return dl, items, nil
}
