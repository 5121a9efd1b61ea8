package engine

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	mathbits "math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vineroute/vinequeue/wal"
)

// The WAL tier. A record on disk holds items (wal.AppendFrame frames, each
// encoded by the Codec). Every batch names where its items are on disk with
// spans — items [off, off+n) of record id — in item order; a batch whose
// items are not on disk has none. When a batch is finished (delivered, or
// given up on) each span is acknowledged with wal.Log.AckRange(id, off, n):
// the log keeps (and persists within a millisecond) which items of a record
// are done and acknowledges the record with its last one, so after a crash
// only the items neither delivered nor given up on come back, even from a
// record whose other items went out in other batches. That bookkeeping
// lives in the log alone.
//
// How items reach the disk, by tier (the tier contract is in tier.go):
//
//   - sync: each call encodes its items and appends them with
//     wal.Log.AppendItems, the log's one group commit (concurrent calls share
//     a record and an fdatasync; a group is bounded by bytes, and an item too
//     large for a record fails alone with ErrTooLarge). Once durable, the
//     items go to the durable inbox with their span, and the collector moves
//     them into batches of BatchSize: commit groups are a unit of writing,
//     never of delivery.
//   - periodic: Enqueue takes the ring fast path, and a batch cut from the
//     rings, keyed or not, goes to Send unwritten. Every SyncInterval the
//     collector cuts what the rings hold, writes (split into records of
//     at most MaxRecord bytes) every batch not delivered yet, wherever it
//     is (waiting for a sender, in Send, retrying: the write ticket,
//     durable.go) and what the keyed shards hold, and syncs the log. A
//     batch delivered before a checkpoint finds it is never written: while
//     Send keeps up, a checkpoint writes the few batches in flight, not a
//     second's worth (a backlog, Send behind the producers, is written as
//     a checkpoint finds it). So every accepted item is on disk within
//     SyncInterval unless delivered first, and a crash loses at most the
//     items accepted in the last SyncInterval (plus one checkpoint's
//     time). Writing every batch before Send (on its sender, and before
//     that on the collector) cost the senders' CPU and the delivery
//     chain's latency for batches whose Send then succeeded.
//     Snappy, the default, pays for what is written: with compressible
//     records (the real job's) a write costs less with it than without,
//     since the copy into the segment and its page faults shrink with the
//     record (BenchmarkRecords' periodic cells, when every batch was
//     written: CPU per event +55–76 % with NoCompression).
//   - overflow: only what the governor spills is written (spill.go).
//
// EnqueueKey's items are written as keyed records (wal.AppendKeyedItemsAt in
// the sync tier, wal.WriteKeyed from the shards in the periodic tier), which
// keep each item's key, so that a replay knows it (replay.go); every other
// record is written as before, without keys.

// span names n consecutive items of a batch: items [off, off+n) of WAL
// record id.
type span struct {
	id     uint64
	off, n int
}

// appendSpan appends items [off, off+n) of record id to spans, extending the
// last span when they continue it.
func appendSpan(spans []span, id uint64, off, n int) []span {
	if k := len(spans) - 1; k >= 0 && spans[k].id == id && spans[k].off+spans[k].n == off {
		spans[k].n += n
		return spans
	}
	return append(spans, span{id, off, n})
}

// takeSpans moves the spans naming the first n items of *src to dst,
// splitting a span that straddles item n. Once every span is taken, *src
// starts again at the front of its array: a keyed shard in Sync mode
// appends a span per item or few, and slicing past the taken ones only
// would have it reallocate each time its array's tail ran out.
func takeSpans(dst []span, src *[]span, n int) []span {
	s := *src
	i := 0
	for n > 0 && i < len(s) {
		sp := s[i]
		if sp.n > n {
			dst = appendSpan(dst, sp.id, sp.off, n)
			s[i].off += n
			s[i].n -= n
			break
		}
		dst = appendSpan(dst, sp.id, sp.off, sp.n)
		n -= sp.n
		i++
	}
	clear(s[:i])
	if i == len(s) {
		*src = s[:0]
	} else {
		*src = s[i:]
	}
	return dst
}

// walTier is the queue's side of the log, and the overflow tier as it
// stands: ring intake, nothing written on the data path (the spiller, when
// there is one, writes), acknowledgements and dead letters in the log. The
// periodic and sync tiers embed it and override what they do differently.
type walTier[T any] struct {
	ringIntake[T]
	log   *wal.Log
	codec Codec[T]
	// syncsAppends: the log fsyncs every append itself (it was opened
	// without wal.Options.NoSync), so what was appended is durable.
	syncsAppends bool
}

func (*walTier[T]) persist(*pending[T], *recordWriter)         {}
func (*walTier[T]) persistShard(*collector[T], *keyedShard[T]) {}
func (*walTier[T]) checkpointEvery() time.Duration             { return 0 }
func (*walTier[T]) checkpoint(*collector[T])                   {}

// overflowTier writes only what the governor spills.
type overflowTier[T any] struct{ *walTier[T] }

// periodicTier writes, on each checkpoint, every batch not delivered yet
// and what the rings and keyed shards hold, then fsyncs.
type periodicTier[T any] struct {
	*walTier[T]
	every time.Duration // WAL.SyncInterval
}

// syncTier makes every intake call's items durable before it returns.
type syncTier[T any] struct{ *walTier[T] }

// refusedFull notes, for Health, that a call is being refused because the
// WAL is full, and returns err.
func (q *Queue[T]) refusedFull(err error) error {
	if errors.Is(err, ErrWALFull) {
		q.walFullAt.Store(time.Now().UnixNano())
	}
	return err
}

// walErr maps the log's errors to the queue's sentinels, keeping the cause.
func walErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrClosed), errors.Is(err, ErrFull), errors.Is(err, ErrWALFull),
		errors.Is(err, ErrTooLarge), errors.Is(err, ErrNoDeadLetter):
		return err // the queue's own already (an error a callback passed through the log)
	case errors.Is(err, wal.ErrLocked):
		return fmt.Errorf("%w: %w", ErrLocked, err)
	case errors.Is(err, wal.ErrFull):
		return fmt.Errorf("%w: %w", ErrWALFull, err)
	case errors.Is(err, wal.ErrTooLarge):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, wal.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("vinequeue: wal: %w", err)
}

// openWAL opens the log of a tier with a WAL; syncAppends asks it to
// fsync every append (the sync tier).
func (q *Queue[T]) openWAL(syncAppends bool) (*walTier[T], error) {
	c := q.cfg.WAL
	codec := q.cfg.Codec
	if codec == nil {
		return nil, invalid("Codec", "required with a WAL")
	}
	log, err := wal.Open(c.Dir, wal.Options{
		Compression: c.Compression,
		SegmentSize: c.SegmentSize,
		MaxBytes:    c.MaxBytes,

		EncryptionKey:  c.EncryptionKey,
		DecryptionKeys: c.DecryptionKeys,
		Logger:         q.logger,
		NoSync:         !syncAppends,
		// The sync tier's keyed records laid out by shard: a batch cut
		// from a run of shards then names a few runs of each record, not
		// one span per item, for acknowledge and the log's ack state.
		KeyGroup: shardGroup,
	})
	if err != nil {
		if errors.Is(err, wal.ErrInvalidOptions) {
			return nil, fmt.Errorf("%w: WAL: %w", ErrInvalidConfig, err)
		}
		return nil, walErr(err)
	}
	// What the replay has to deliver: Stats counts it in the backlog until
	// the replayer has read it.
	q.backlogAtOpen = log.Stats().ItemsPending
	return &walTier[T]{ringIntake: ringIntake[T]{q}, log: log, codec: codec, syncsAppends: syncAppends}, nil
}

// shardGroup is a key's keyed shard, as the log's KeyGroup.
func shardGroup(key uint64) uint8 { return uint8(ShardOf(key)) }

// encoding is one call's items, encoded (Sync mode). Pooled: a call
// allocates nothing once the pool is warm.
type encoding struct {
	buf   []byte
	ends  []int
	items [][]byte
}

var encodings = sync.Pool{New: func() any { return new(encoding) }}

// encode encodes vs into e, one []byte per item (aliasing e.buf). On a
// codec error e holds the items before the one that failed.
func (w *walTier[T]) encode(e *encoding, vs []T) error {
	e.buf, e.ends, e.items = e.buf[:0], e.ends[:0], e.items[:0]
	var err error
	for _, v := range vs {
		if e.buf, err = w.appendItem(e.buf, v); err != nil {
			err = fmt.Errorf("vinequeue: wal codec: %w", err)
			break
		}
		e.ends = append(e.ends, len(e.buf))
	}
	start := 0
	for _, end := range e.ends {
		e.items = append(e.items, e.buf[start:end:end])
		start = end
	}
	return err
}

// recordItems returns how many of items, from the first, fit one record:
// at least one unless the first alone does not fit (0).
func (w *walTier[T]) recordItems(items [][]byte) int {
	limit, size := w.log.MaxRecord(), 0
	for i, it := range items {
		size += wal.FrameSize(len(it))
		if size > limit {
			return i
		}
	}
	return len(items)
}

// durableInbox holds items made durable by their call (the sync tier's
// intake, requeued dead letters) and not yet taken by the collector, with
// their spans. Callers add under mu; the collector takes everything at
// once, swapping in its emptied slices; full says whether there is anything
// to take, so that a queue that never uses the inbox pays one load per
// look. Their bytes were charged by admit; the collector carries them into
// batches (bytesOf, the same sum) without charging again.
type durableInbox[T any] struct {
	mu    sync.Mutex
	full  atomic.Bool // written under mu
	items []T
	spans []span
}

// add appends vs, which are the items sp names; it reports whether the
// inbox was empty (then the collector needs a wake).
func (in *durableInbox[T]) add(vs []T, sp span) (wasEmpty bool) {
	in.mu.Lock()
	wasEmpty = len(in.items) == 0
	in.full.Store(true)
	in.items = append(in.items, vs...)
	in.spans = appendSpan(in.spans, sp.id, sp.off, sp.n)
	in.mu.Unlock()
	return wasEmpty
}

// take swaps the inbox's contents for the given empty slices.
func (in *durableInbox[T]) take(items []T, spans []span) ([]T, []span) {
	if !in.full.Load() {
		return items, spans
	}
	in.mu.Lock()
	in.full.Store(false)
	items, in.items = in.items, items
	spans, in.spans = in.spans, spans
	in.mu.Unlock()
	return items, spans
}

// acceptOne is the sync tier's Enqueue: the item is made durable
// (appendDurable) within the intake gate.
func (t syncTier[T]) acceptOne(v T) error {
	one := [1]T{v}
	_, err := t.acceptBatch(one[:])
	return err
}

// acceptBatch is the sync tier's EnqueueBatch: the items are made durable
// (appendDurable) within the intake gate.
func (t syncTier[T]) acceptBatch(vs []T) (int, error) {
	q := t.q
	if !q.intake.enter() {
		return 0, ErrClosed
	}
	defer q.intake.leave()
	return t.appendDurable(vs)
}

// appendDurable is the one path for items that must be on disk before the
// call returns (Sync-mode intake, requeued dead letters): vs are encoded,
// admitted and appended with the log's group commit, in records of at most
// MaxRecord bytes (synced here unless the log syncs every append
// itself), then handed to the collector with their spans through the
// durable inbox. It returns how many were accepted, from the first: on an
// error, vs[n:] were not. An item whose encoding fails, or that cannot fit
// a record, is refused (with the items after it; those before it go in).
// The caller holds the intake gate.
func (w *walTier[T]) appendDurable(vs []T) (int, error) {
	q := w.q
	e := encodings.Get().(*encoding)
	defer encodings.Put(e)
	encErr := w.encode(e, vs)
	items := e.items
	n := 0
	for n < len(items) {
		k := w.recordItems(items[n:])
		if k == 0 {
			encErr = fmt.Errorf("%w: item of %d bytes, records hold %d", ErrTooLarge, len(items[n]), w.log.MaxRecord())
			break
		}
		chunk := vs[n : n+k]
		bytes := q.bytesOf(chunk)
		if err := q.admit(k, bytes, true); err != nil {
			return n, err
		}
		id, index, err := w.log.AppendItemsAt(items[n : n+k])
		if err == nil && !w.syncsAppends {
			err = w.log.Sync()
		}
		if err != nil {
			q.unadmit(bytes)
			q.walRejected.Add(uint64(len(vs) - n))
			return n, q.refusedFull(walErr(err))
		}
		q.syncAccepted.Add(uint64(k))
		if q.inbox.add(chunk, span{id, index, k}) {
			q.wakeCollector()
		}
		n += k
	}
	if encErr != nil {
		q.walRejected.Add(uint64(len(vs) - n))
		return n, encErr
	}
	return n, nil
}

// acceptKeyed makes one EnqueueKey item durable, in a keyed record with
// its key, and returns its span. The caller holds the intake gate and has
// admitted the item.
func (t syncTier[T]) acceptKeyed(key uint64, v T) (span, error) {
	one := [1]uint64{key}
	return t.appendOne(v, one[:])
}

// appendOne makes one item durable and returns its span: keyed (keys holds
// its key) or not (keys nil).
func (t syncTier[T]) appendOne(v T, keys []uint64) (span, error) {
	q := t.q
	e := encodings.Get().(*encoding)
	defer encodings.Put(e)
	// encode for one item, without its list of ends.
	buf, err := t.appendItem(e.buf[:0], v)
	if err != nil {
		q.walRejected.Add(1)
		return span{}, fmt.Errorf("vinequeue: wal codec: %w", err)
	}
	e.buf = buf
	e.items = append(e.items[:0], buf)
	var id uint64
	var index int
	if keys != nil {
		id, index, err = t.log.AppendKeyedItemsAt(e.items, keys)
	} else {
		id, index, err = t.log.AppendItemsAt(e.items)
	}
	if err != nil {
		q.walRejected.Add(1)
		return span{}, q.refusedFull(walErr(err))
	}
	return span{id: id, off: index, n: 1}, nil
}

// recordWriter holds one goroutine's buffers for the records it builds
// (writeBatch, persistShard): the collector has one, and so does each
// sender (for a batch whose Send failed for good, written before its dead
// letter).
type recordWriter struct {
	// rec is the record being built: count items framed in place
	// (appendFramed), so that an item's bytes are copied once on their
	// way to the log, by the codec.
	rec   []byte
	count int
	keys  []uint64 // a keyed record's: the keys of the items in rec
}

func (rw *recordWriter) reset() { rw.rec, rw.keys, rw.count = rw.rec[:0], rw.keys[:0], 0 }

// recordLimit is the most payload bytes a record of items may hold: a
// keyed record's trailer takes its share (format.go).
func (w *walTier[T]) recordLimit(keyed bool) int {
	if keyed {
		return w.log.MaxRecord() - 4
	}
	return w.log.MaxRecord()
}

// recordTarget is the size past which a record of several items is not
// grown: the buffers that frame and compress a record are then reused
// from one record to the next (the log keeps compression buffers of up to
// 1 MiB), where records of up to MaxRecord (16 MiB by default) made each
// checkpoint of a large backlog allocate, zero and fault in buffers as
// large. An item larger than this still gets a record of its own.
const recordTarget = 768 << 10

// appendFramed appends v to rec framed as wal.AppendFrame frames an item
// (uvarint length, then the bytes), encoding it in place: two bytes are
// kept for the length, which is what items of 128 bytes to 16 KiB need,
// and the encoding is moved only when its length needs another size. It
// returns the item's encoded length. On an error rec is returned as it
// was.
func (w *walTier[T]) appendFramed(rec []byte, v T) ([]byte, int, error) {
	mark := len(rec)
	out, err := w.appendItem(append(rec, 0, 0), v)
	if err != nil {
		return rec[:mark], 0, fmt.Errorf("vinequeue: wal codec: %w", err)
	}
	n := len(out) - mark - 2
	switch k := uvarintLen(n); {
	case k == 1:
		copy(out[mark+1:], out[mark+2:])
		out = out[:len(out)-1]
	case k > 2:
		for range k - 2 {
			out = append(out, 0)
		}
		copy(out[mark+k:], out[mark+2:mark+2+n])
	}
	binary.PutUvarint(out[mark:], uint64(n))
	return out, n, nil
}

// uvarintLen is the size of n as a uvarint.
func uvarintLen(n int) int {
	k := 1
	for u := uint64(n); u >= 0x80; u >>= 7 {
		k++
	}
	return k
}

// frame adds v (with key when keyed) to rw's record if it fits: a record
// holds up to recordTarget bytes, or one item of up to limit. full: it
// does not fit, and the record holds items: the caller writes the record
// and calls again. An error: v cannot be written at all (the codec refused
// it, or it does not fit an empty record); rw is unchanged.
func (w *walTier[T]) frame(rw *recordWriter, v T, key uint64, keyed bool, limit int) (full bool, err error) {
	mark := len(rw.rec)
	out, n, err := w.appendFramed(rw.rec, v)
	if err != nil {
		rw.rec = out
		return false, err
	}
	perItem := 0 // what a key adds to an item (format.go)
	if keyed {
		perItem = 8
	}
	size := len(out) + (rw.count+1)*perItem
	if rw.count > 0 && size > min(recordTarget, limit) {
		rw.rec = out[:mark]
		return true, nil
	}
	if size > limit {
		rw.rec = out[:mark]
		return false, fmt.Errorf("%w: item of %d bytes, records hold %d", ErrTooLarge, n, limit)
	}
	rw.rec = out
	if keyed {
		rw.keys = append(rw.keys, key)
	}
	rw.count++
	return false, nil
}

// writeRecord writes rw's record, not synced (keyed: as a keyed record,
// with its keys), and empties rw. It returns the record's id and how many
// items it holds.
func (w *walTier[T]) writeRecord(rw *recordWriter, keyed bool) (id uint64, n int, err error) {
	n = rw.count
	if keyed {
		rw.rec = wal.AppendKeys(rw.rec, rw.keys)
		id, err = w.log.WriteKeyed(rw.rec)
	} else {
		id, err = w.log.Write(rw.rec)
	}
	rw.reset()
	return id, n, walErr(err)
}

// unwritable counts and logs an item that cannot be written (its codec
// failed, or it is too large for a record): it is delivered from memory
// only.
func (w *walTier[T]) unwritable(err error) {
	w.q.walErrors.Add(1)
	w.q.logger.Warn("vinequeue: an item cannot be written to the wal; it is delivered from memory only", "err", err)
}

// writeBatch writes b's items (not yet on disk) as records of at most
// MaxRecord bytes, not synced, and names them in b.spans. A keyed batch's
// (b.keys, one per item) are written as keyed records, with their keys. An item too large
// for any record (or one the codec refuses) cannot be written: it stays in
// b, delivered from memory only (counted and logged), under a span of id 0.
// On a write error the items not written get a span of id 0 too: what was
// written stays named (and is acknowledged with the batch).
func (w *walTier[T]) writeBatch(b *pending[T], rw *recordWriter) error {
	keyed := len(b.keys) > 0 && len(b.keys) == len(b.items)
	limit := w.recordLimit(keyed)
	rw.reset()
	b.spans = b.spans[:0]
	// flush writes the record; on failure the items from item i on, and
	// those the record held, get a span of id 0.
	flush := func(i int) error {
		if rw.count == 0 {
			return nil
		}
		id, n, err := w.writeRecord(rw, keyed)
		if err != nil {
			b.spans = append(b.spans, span{n: len(b.items) - i + n})
			return err
		}
		b.spans = appendSpan(b.spans, id, 0, n)
		return nil
	}
	for i, v := range b.items {
		var key uint64
		if keyed {
			key = b.keys[i]
		}
		full, err := w.frame(rw, v, key, keyed, limit)
		if full {
			if ferr := flush(i); ferr != nil {
				return ferr
			}
			_, err = w.frame(rw, v, key, keyed, limit)
		}
		if err != nil {
			if ferr := flush(i); ferr != nil {
				return ferr
			}
			w.unwritable(err)
			b.spans = append(b.spans, span{n: 1}) // id 0: not on disk
		}
	}
	return flush(len(b.items))
}

// appendItem is Codec.Append with a panic in it turned into an error: a
// Codec runs on the caller's goroutine, a sender or the collector, and a
// bad item must not take the process down.
func (w *walTier[T]) appendItem(dst []byte, v T) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = dst, fmt.Errorf("vinequeue: Codec.Append panicked: %v", p)
		}
	}()
	return w.codec.Append(dst, v)
}

// decodeItem is Codec.Decode with a panic in it turned into an error.
func (w *walTier[T]) decodeItem(src []byte) (v T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("vinequeue: Codec.Decode panicked: %v", p)
		}
	}()
	return w.codec.Decode(src)
}

// decode appends the items framed in a record payload to dst.
func (w *walTier[T]) decode(dst []T, payload []byte) ([]T, error) {
	err := wal.ForEachItem(payload, func(item []byte) error {
		v, err := w.decodeItem(item)
		if err != nil {
			return err
		}
		dst = append(dst, v)
		return nil
	})
	return dst, err
}

// persist writes b if it is not on disk yet: a batch cut from the rings,
// keyed or not, that a checkpoint or a Stop out of time found undelivered,
// or whose Send failed for good (keyed batches taken from shards' queues
// come with the spans the checkpoint wrote them under, replayed and
// durable ones with their records', and one whose write failed names its
// items with id 0; a dead letter delivered again is in its dead letter).
// The caller has claimed b's write ticket, if it has one (durable.go). On
// failure the batch is still delivered from memory, just not protected;
// the failure is counted and logged.
//
// A full WAL (MaxBytes or the disk) is the producers' business too: until a
// write succeeds again, intake past the fast path is refused with that
// error and rings are no longer handed off (holdRings), so producers meet
// it within a ring's worth of items. The checkpoint tick tries again.
func (t periodicTier[T]) persist(b *pending[T], rw *recordWriter) {
	if len(b.spans) > 0 || b.letter != 0 {
		return
	}
	q := t.q
	if err := t.writeBatch(b, rw); err != nil {
		t.writeFailed(err, len(b.items))
		return
	}
	// An item the codec refused, or too large for a record, is in memory
	// only (span id 0): b holds DurableThrough until it is finished, or a
	// later checkpoint would claim that item.
	if b.onDisk() {
		q.written(b)
	}
	t.wrote()
}

// wrote notes a write that succeeded: a full WAL takes intake again.
func (t periodicTier[T]) wrote() {
	if q := t.q; q.walFull.Load() != nil {
		q.walFull.Store(nil)
	}
}

// writeFailed counts and logs a failed write of items items, kept in
// memory only; a full WAL refuses intake until a write succeeds again.
func (t periodicTier[T]) writeFailed(err error, items int) {
	q := t.q
	q.walErrors.Add(1)
	if errors.Is(err, ErrWALFull) {
		q.walFull.Store(&err)
	}
	q.logger.Warn("vinequeue: wal write failed; batch kept in memory only", "items", items, "err", err)
}

// persistShard writes the shard's items not on disk yet as records (keyed
// records when the shard keeps their keys) and records their spans: the
// checkpoint's, after the shard's batches handed on are settled
// (settleFlight), so that the shard's items reach the WAL in their order.
// (Cuts call it too; the shard's queue holds only what a checkpoint wrote,
// so it finds nothing.) On failure they stay in memory only (persist).
//
// It copies the items out persistChunk at a time, onto its own stack,
// and encodes and writes them with the shard unlocked, so that producers
// of the shard's keys wait for a chunk's copy at most, never for the
// codec or the log. That is safe because they only append meanwhile, and
// only the collector (this goroutine) writes or takes a shard's items:
// items[i] is the same item after the lock is taken again (an append may
// move the array, not the items' order), and the shard's items reach the
// WAL in their order. A chunk on the stack, rather than a copy of every
// item into a batch, needs neither write barriers nor clearing afterwards
// (the retention rule is about the heap), and stays in cache.
func (t periodicTier[T]) persistShard(c *collector[T], s *keyedShard[T]) {
	end := len(s.items)
	if s.persisted == end {
		return
	}
	rw := &c.enc
	keyed := len(s.keys) == len(s.items)
	limit := t.recordLimit(keyed)
	rw.reset()
	var (
		items [persistChunk]T
		keys  [persistChunk]uint64
		spans []span // named since the lock was let go, in order
		named int    // the items spans names
		werr  error
	)
	// flush writes the record (unlocked) and names its items.
	flush := func() bool {
		if rw.count == 0 {
			return true
		}
		id, n, err := t.writeRecord(rw, keyed)
		if err != nil {
			werr = err
			return false
		}
		spans = appendSpan(spans, id, 0, n)
		named += n
		return true
	}
	for i := s.persisted; i < end && werr == nil; {
		k := copy(items[:], s.items[i:end])
		if keyed {
			copy(keys[:], s.keys[i:i+k])
		}
		i += k
		s.mu.Unlock()
		spans, named = spans[:0], 0
		for j := 0; j < k && werr == nil; j++ {
			full, err := t.frame(rw, items[j], keys[j], keyed, limit)
			if full {
				if !flush() {
					break
				}
				_, err = t.frame(rw, items[j], keys[j], keyed, limit)
			}
			if err != nil {
				if !flush() {
					break
				}
				t.unwritable(err)
				spans = append(spans, span{n: 1}) // id 0: not on disk
				named++
			}
		}
		if i == end && werr == nil {
			flush()
		}
		s.mu.Lock()
		s.spans = append(s.spans, spans...)
		s.persisted += named
	}
	if werr == nil {
		t.wrote()
		return
	}
	// What is not written stays in memory only, under a span of id 0.
	rw.reset()
	s.spans = append(s.spans, span{n: end - s.persisted})
	t.writeFailed(werr, end-s.persisted)
	s.persisted = end
}

// persistChunk is how many items persistShard copies out of a shard at a
// time: the most a producer of the shard's keys waits for.
const persistChunk = 64

func (t periodicTier[T]) checkpointEvery() time.Duration { return t.every }

// checkpoint: what the rings hold is cut into batches, the batches waiting
// for a sender are written, then every batch handed on and not delivered
// yet, in cut order (writeUnwritten: in Send, retrying or being taken);
// each keyed shard's batches handed on are settled (written, delivered, or
// another writer's write waited for: settleFlight) and then what the shard
// holds is written where it is, and then every record so far is made
// durable. A full WAL is tried again here (persist). Then
// Stats.DurableThrough moves to the checkpoint's start, or to the oldest
// batch still unwritten (another writer's write under way, or a write that
// failed; durable.go); the start is taken before anything is cut, so that
// every item accepted before it is in what the checkpoint finds.
//
// The fdatasync runs while the collector goes on cutting and dispatching
// (it took tens to hundreds of milliseconds with a second's writes here,
// and delivery stopped meanwhile): the mark moves when it ends
// (syncEnded). One is under way at a time: the next checkpoint waits for
// the last one's first, so that checkpoints end in order, each before the
// next starts.
func (t periodicTier[T]) checkpoint(c *collector[T]) {
	q := t.q
	c.endSync()
	now := time.Now()
	start := q.durable.nanos(now)
	if f := q.cfg.CheckpointStarted; f != nil {
		f(now)
	}
	failures := q.walErrors.Load()
	q.walFull.Store(nil)
	complete := c.checkpointDrain()
	c.writeReady()
	c.since = start
	// The other central shards do the same; one that cannot vouch for its
	// rings answers errRingsUncertain.
	if err := c.shardCheckpoint(start); err != nil {
		complete = false
	}
	// Then the batches handed on and not delivered yet, in cut order:
	// before what the keyed shards hold, so that a key's in-flight batch
	// reaches the WAL before the items after it.
	c.writeUnwritten()
	if !c.writeKeyed() {
		complete = false
	}
	// The bound is taken before the fsync starts: a batch whose write
	// ends after it still holds it, and one whose write ended before it
	// is among the records StartSync covers (those written so far). (The
	// other way round, a write ending between the two was claimed and not
	// covered.)
	through := q.durable.bound(start)
	c.syncing = &checkpointSync{
		sync:     t.log.StartSync(),
		through:  through,
		complete: complete,
		failures: failures,
	}
}

// checkpointSync is a checkpoint's fdatasync under way, and what the
// checkpoint may claim once it has ended.
type checkpointSync struct {
	sync     *wal.PendingSync
	through  int64  // the durable mark's bound, taken before the sync started
	complete bool   // the checkpoint wrote everything it found
	failures uint64 // walErrors when the checkpoint started
}

// syncEnded is closed when the collector's checkpoint sync has ended (nil:
// none under way), for the collector's select.
func (c *collector[T]) syncEnded() <-chan struct{} {
	if c.syncing == nil {
		return nil
	}
	return c.syncing.sync.Done()
}

// endSync waits for the checkpoint sync under way, if any, and moves the
// durable mark if the checkpoint wrote everything it found, no write has
// failed since it started, and the sync succeeded.
func (c *collector[T]) endSync() {
	cs := c.syncing
	if cs == nil {
		return
	}
	c.syncing = nil
	q := c.q
	err := cs.sync.Err()
	if err != nil && !errors.Is(err, wal.ErrClosed) {
		q.walErrors.Add(1)
		q.logger.Warn("vinequeue: wal sync failed", "err", walErr(err))
	}
	if err == nil && cs.complete && q.walErrors.Load() == cs.failures {
		q.durable.advance(cs.through)
	}
}

// acknowledge acknowledges b's items in the WAL: delivered, or given up on.
// It acknowledges b's spans sorted and merged (ackOrder) when they are not
// in order already (ackOrdered): in Sync mode a record's items reach a
// batch through many calls, keyed shards or the durable inbox, out of item
// order, so that a batch of a thousand items names a few records by a
// thousand one-item spans, and each would cost a locked AckRange and an
// entry in the ack log.
func (w *walTier[T]) acknowledge(b *pending[T]) {
	q := w.q
	spans := b.spans
	if !ackOrdered(spans) {
		buf := ackScratch.Get().(*ackBuffers)
		spans = ackOrder(append(buf.spans[:0], spans...), buf)
		defer func() {
			buf.spans = spans[:0] // spans hold no pointers: nothing to clear
			ackScratch.Put(buf)
		}()
	}
	for _, s := range spans {
		if s.id == 0 {
			continue
		}
		if err := w.log.AckRange(s.id, s.off, s.n); err != nil && !errors.Is(err, wal.ErrClosed) {
			q.logger.Warn("vinequeue: wal ack failed", "record", s.id, "err", err)
		}
	}
	if len(spans) > 0 {
		// In the ack log's page cache before the batch is finished: a
		// SIGKILL from now on does not bring these items back.
		if err := w.log.WriteAcks(); err != nil && !errors.Is(err, wal.ErrClosed) {
			q.logger.Warn("vinequeue: writing wal acks failed", "err", err)
		}
	}
}

// ackScratch holds the buffers acknowledge orders a batch's spans in (a
// copy: the batch's spans stay in item order, which the park and Stop
// paths read).
var ackScratch = sync.Pool{New: func() any { return new(ackBuffers) }}

// ackBuffers are acknowledge's scratch: the spans it orders, and the bit
// set ackOrder marks items in.
type ackBuffers struct {
	spans []span
	bits  []uint64
	base  []int // record min+i's first word in bits
}

// The bit set's bounds: a batch's spans beyond them (many records, or
// items far into a huge record) are sorted instead.
const (
	ackBitRecords = 1024
	ackBitWords   = 1 << 14
)

// ackOrder puts spans in record and item order and merges those that
// continue each other, in place, and returns them: the same items, in as
// few spans as they make. A batch names few records, close together, so
// it marks the items in a bit set per record and reads the runs back,
// in time linear in the items; else it sorts.
func ackOrder(spans []span, buf *ackBuffers) []span {
	lo, hi := ^uint64(0), uint64(0)
	for _, sp := range spans {
		if sp.id != 0 {
			lo, hi = min(lo, sp.id), max(hi, sp.id)
		}
	}
	if lo > hi || hi-lo >= ackBitRecords {
		return ackSort(spans)
	}
	records := int(hi - lo + 1)
	base := append(buf.base[:0], make([]int, records+1)...)
	for _, sp := range spans { // base[i+1]: record lo+i's words
		if sp.id != 0 {
			i := int(sp.id-lo) + 1
			base[i] = max(base[i], (sp.off+sp.n+63)/64)
		}
	}
	for i := 1; i <= records; i++ {
		base[i] += base[i-1]
	}
	words := base[records]
	buf.base = base
	if words > ackBitWords {
		return ackSort(spans)
	}
	bits := append(buf.bits[:0], make([]uint64, words)...)
	buf.bits = bits
	out := spans[:0] // the spans of id 0 first, as they were: out stays behind
	for _, sp := range spans {
		if sp.id == 0 {
			out = append(out, sp)
			continue
		}
		w := bits[base[sp.id-lo]:]
		for i := sp.off; i < sp.off+sp.n; i++ {
			w[i/64] |= 1 << (i % 64)
		}
	}
	for r := range records {
		w := bits[base[r]:base[r+1]]
		for k, word := range w {
			for word != 0 {
				i := k*64 + mathbits.TrailingZeros64(word)
				out = appendSpan(out, lo+uint64(r), i, 1)
				word &= word - 1
			}
		}
	}
	return out
}

// ackOrdered reports whether spans are in record and item order, each
// past the end of the one before (as a batch cut from one record, or from
// the rings and written whole, is): ackOrder would return them as they
// are, give or take a merge.
func ackOrdered(spans []span) bool {
	for i := 1; i < len(spans); i++ {
		p, s := spans[i-1], spans[i]
		if s.id < p.id || s.id == p.id && s.off < p.off+p.n {
			return false
		}
	}
	return true
}

// ackSort is ackOrder by sorting.
func ackSort(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int {
		if c := cmp.Compare(a.id, b.id); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	out := spans[:0]
	for _, sp := range spans { // out never passes sp: appendSpan writes behind
		out = appendSpan(out, sp.id, sp.off, sp.n)
	}
	return out
}
